"""`--span off`, `snap` and `constrain` on one adapter, on the same KorQuAD evaluation questions.

    .venv/bin/python bench/span_modes.py --adapter runs/recipe10/sweep/base/run [--limit 400] [--backend vllm]

Evaluates the adapter three ways on the first --limit questions of the evaluation articles (real,
distinct KorQuAD questions on their real passages): answers as generated (`off`), the same
generations snapped to the closest passage span (`snap`, post-processing only: no generation of
its own), and generation constrained to passage spans (`constrain`). Prints F1, EM, questions/s of
the generating runs (engine start excluded, as koqa eval reports it) and `koqa compare` of snap and
constrain against off: ΔF1 / ΔEM with paired 95% intervals.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, koqa_cli, prepared_korquad, read_json  # noqa: E402
from koqa.eval.compare import CompareConfig, compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", required=True, help="a `koqa sft` run folder")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--out", default="runs/span-modes")
    args = parser.parse_args()
    out = Path(args.out)
    data = prepared_korquad(out) / "validation.jsonl"
    folders = {}
    for mode in ("off", "snap", "constrain"):
        folder = out / mode
        if mode == "snap":  # the same generations as off, snapped: copy the answer log, generate nothing
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            shutil.copy(out / "off" / "generations.jsonl", folder / "generations.jsonl")
        koqa_cli(
            "eval", "--data", str(data), "--adapter", args.adapter, "--out", str(folder), "--limit", str(args.limit),
            "--span", mode, "--backend", args.backend,
        )  # fmt: skip
        folders[mode] = folder
    results = Results("span_modes", f"Span modes on one adapter — bench/span_modes.py --adapter {args.adapter}")
    rows = []
    for mode, folder in folders.items():
        m = read_json(folder / "metrics.json")
        qps = f"{m['questions_per_second']:.2f}" if m.get("questions_per_second") else "(off's generations)"
        rows.append([mode, m["n"], f"{m['f1']:.4f}", f"{m['exact_match']:.4f}", qps])
    print(results.table(["--span", "questions", "F1", "EM", "questions/s"], rows, title="Span modes"))
    compared = compare(CompareConfig(runs=[str(folders[m]) for m in ("off", "snap", "constrain")], out=str(out)))
    print(results.note(compared["markdown"]))
    results.write()


if __name__ == "__main__":
    main()
