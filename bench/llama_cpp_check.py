"""Does llama.cpp answer with a file `koqa export` wrote as koqa does with it?

    python bench/llama_cpp_check.py --export DIR [--limit 200]

DIR: a `koqa export --check` folder over the KorQuAD evaluation articles (bench/export_quality.py
writes them). llama.cpp itself, through
`llama-cpp-python` (built from its PyPI source distribution; it has no wheel for this platform),
loads DIR's GGUF file and answers the first --limit questions of the check greedily, each prompt
rendered by koqa (the template and lengths recorded in the file) and each answer read as koqa reads
one. The table: how many answers equal those of transformers' reading of the same file
(DIR/check/exported), and the F1 / EM of each on those questions.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, Results, read_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError:
        raise SystemExit("llama_cpp is not importable: pip install llama-cpp-python (it builds llama.cpp)") from None
    from koqa.data_tools.normalize import build_normalizer
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.metrics import score_one
    from koqa.eval.pipeline import postprocess, prepare_eval, read_eval_records

    folder = Path(args.export)
    done = read_json(folder / "koqa_export.json")
    exported = folder / "check" / "exported"
    with open(exported / "predictions.csv", encoding="utf-8") as handle:
        by_transformers = {row["id"]: row["prediction"] for row in csv.DictReader(handle)}
    config = EvalConfig(
        data=str(KORQUAD),
        korquad_split="eval",
        model=str(folder / "check" / "reloaded"),
        template=str(folder / "template.txt"),
    )
    records = [r for r in read_eval_records(config) if r.id in by_transformers][: args.limit]
    prepared = prepare_eval(records, config)
    llm = Llama(
        model_path=str(folder / done["file"]),
        n_ctx=prepared.max_length + prepared.max_new_tokens,
        n_threads=2,
        verbose=False,
    )
    normalize = build_normalizer(config.answer_normalization)
    same, scores, started = 0, {"llama.cpp": [], "transformers": []}, time.perf_counter()
    for record in records:
        ids = prepared.renderer.render(record.context, record.question).ids
        text = llm.create_completion(ids, max_tokens=prepared.max_new_tokens, temperature=0.0)["choices"][0]["text"]
        answer = postprocess(text, record.context, normalize, "off", prepared.renderer.no_answer)
        same += answer == by_transformers[record.id]
        for name, given in (("llama.cpp", answer), ("transformers", by_transformers[record.id])):
            scores[name].append(score_one(given, record.answers))
    seconds = time.perf_counter() - started

    report = Results("llama_cpp_check", "llama.cpp on a file koqa export wrote, against transformers' reading of it")
    print(
        report.note(
            f"llama.cpp (llama-cpp-python) loaded `{done['file']}` ({done['quant']}) and answered the first "
            f"{len(records)} questions of its check greedily in {seconds:.0f} s, prompts rendered by koqa; "
            "the same file read by transformers' GGUF loader answered them in `koqa export --check`."
        )
    )
    rows = [
        [name, f"{sum(s['f1'] for s in got) / len(got):.4f}", f"{sum(s['exact_match'] for s in got) / len(got):.4f}"]
        for name, got in scores.items()
    ]
    print(report.table(["reader", "F1", "EM"], rows))
    print(report.note(f"Answers equal between the two readers: {same} / {len(records)}."))
    report.write()


if __name__ == "__main__":
    main()
