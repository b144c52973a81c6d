"""What a trained run still scores after `koqa export` quantises it, read back by an independent reader.

    .venv/bin/python bench/export_quality.py --adapter RUN [--quants q8_0,q4_0] [--out runs/export] [--limit N]

For each quantisation: `koqa export --adapter RUN --format gguf --quant Q --check KORQUAD --korquad-split
eval`, which writes the GGUF file, reads it back through transformers' GGUF loader (dequantised),
and answers the 1,287 evaluation-article questions with both the exported and the unexported model
(`koqa eval`, the --backend given) and compares them with paired intervals (`koqa compare`). The
table: file size, F1 / EM of each, ΔF1 and ΔEM with their 95% intervals, answers that changed.
RUN: a `koqa sft` run of the default model, e.g. bench/rl_quality.py's OUT/sft (the recipe's config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, Results, koqa_cli, read_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--quants", default="q8_0,q4_0")
    parser.add_argument("--out", default="runs/export")
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    if not KORQUAD.is_file():
        raise SystemExit(f"the KorQuAD dev set is not at {KORQUAD}: set KOQA_KORQUAD")

    rows, run = [], read_json(Path(args.adapter) / "koqa_run.json")
    for quant in args.quants.split(","):
        out = Path(args.out) / quant
        if not (out / "koqa_export.json").is_file() or "check" not in read_json(out / "koqa_export.json"):
            command = ["export", "--adapter", args.adapter, "--quant", quant, "--out", str(out)]
            command += ["--check", str(KORQUAD), "--korquad-split", "eval", "--backend", args.backend]
            koqa_cli(*command, *(["--limit", str(args.limit)] if args.limit else []))
        done = read_json(out / "koqa_export.json")
        check = read_json(out / "check" / "compare" / "compare.json")["runs"][0]
        f1_low, f1_high = check["delta_f1_ci95"]
        em_low, em_high = check["delta_exact_match_ci95"]
        rows.append(
            [
                quant,
                f"{done['bytes'] / 2**20:.0f}",
                f"{done['check']['f1_unexported']:.4f}",
                f"{check['f1']:.4f}",
                f"{check['delta_f1']:+.4f} [{f1_low:+.4f}, {f1_high:+.4f}]",
                f"{done['check']['exact_match_unexported']:.4f}",
                f"{check['exact_match']:.4f}",
                f"{check['delta_exact_match']:+.4f} [{em_low:+.4f}, {em_high:+.4f}]",
                check["answers_differ"],
            ]
        )
        questions = done["check"]["questions"]
    report = Results("export_quality", "What an exported run scores: GGUF quantisations read back and scored again")
    print(
        report.note(
            f"`koqa export` of `{args.adapter}` ({run['method']} on {run.get('model_path') or 'the default model'}), "
            f"each file read back by transformers' GGUF loader and answering the {questions} KorQuAD "
            f"evaluation-article questions with the {args.backend} backend, against the unexported run (same "
            "backend, same questions); paired bootstrap intervals from `koqa compare`."
        )
    )
    headers = ["quant", "MiB", "F1 before", "F1 after", "ΔF1 [95% CI]", "EM before", "EM after", "ΔEM [95% CI]"]
    print(report.table([*headers, "answers changed"], rows))
    report.write()


if __name__ == "__main__":
    main()
