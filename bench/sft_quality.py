"""Quality per method for a fixed training budget on this machine.

    .venv/bin/python bench/sft_quality.py --minutes 30 --methods lora,qlora,prefix,prompt [--eval-limit N]

Trains on the KorQuAD training articles (article index not divisible by 5), evaluates on the
evaluation articles (all 1,287 questions unless --eval-limit), and prints one table with zero-shot
beside every method: minutes of training, questions seen, leaderboard F1, EM, evaluation q/s.
Run folders are kept under --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, koqa_cli, prepared_korquad, read_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--methods", default="lora,qlora,prefix,prompt")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="extra sft overrides, key=value")
    args = parser.parse_args()

    from importlib import resources

    out = Path(args.out)
    data = prepared_korquad(out)
    evaluation = str(data / "validation.jsonl")  # the evaluation articles
    rows = []
    report = Results("sft_quality", f"Quality per method in {args.minutes:g} minutes — bench/sft_quality.py")

    def evaluate(name, adapter, minutes, seen):
        started = time.perf_counter()
        eval_dir = out / f"eval-{name}"
        koqa_cli(
            "eval",
            "--data",
            evaluation,
            "--out",
            str(eval_dir),
            *(["--adapter", adapter] if adapter else []),
            *(["--limit", str(args.eval_limit)] if args.eval_limit else []),
        )
        m = read_json(eval_dir / "metrics.json")
        seconds = time.perf_counter() - started
        qps = m["questions_per_second"] or m["n"] / seconds
        rows.append([name, minutes, seen, m["n"], f"{m['f1']:.4f}", f"{m['exact_match']:.4f}", f"{qps:.2f}"])
        print(
            report.table(
                ["method", "train min", "questions seen", "eval n", "F1", "EM", "eval q/s"], rows, title="methods"
            ),
            flush=True,
        )

    if not args.no_zero_shot:
        evaluate("zero-shot", None, 0, 0)
    configs = Path(str(resources.files("koqa"))) / "configs"
    for method in args.methods.split(","):
        run_dir = out / method
        summary_file = run_dir / "metrics.json"
        if not summary_file.is_file():
            koqa_cli(
                "sft",
                "--config",
                str(configs / f"{method}.yaml"),
                "--data",
                str(data),
                "--out",
                str(run_dir),
                "--max-minutes",
                str(args.minutes),
                "--set",
                "validation_limit=0",
                *[arg for item in args.set for arg in ("--set", item)],
            )
        summary = read_json(summary_file)
        evaluate(method, str(run_dir), f"{summary['train_seconds'] / 60:.1f}", summary["questions_seen"])
    report.write()


if __name__ == "__main__":
    main()
