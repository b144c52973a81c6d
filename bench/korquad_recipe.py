"""The one-hour KorQuAD recipe end to end, and ablations of it.

    .venv/bin/python bench/korquad_recipe.py
    .venv/bin/python bench/korquad_recipe.py --minutes 10 --eval-limit 300 \\
        --variant "schedule over steps:schedule_over=steps" --variant "lr 4e-4:learning_rate=4e-4"

Preprocesses KorQuAD once (training articles / evaluation articles, as in the data notice), trains
the default model with koqa/configs/korquad_hour.yaml (and each --variant: NAME:key=value;key=value,
the recipe with those overrides), evaluates on the evaluation articles (all 1,287 questions unless
--eval-limit), re-scores the same generations with span snapping, and prints one table: variant,
minutes of training, training questions seen, F1, the F1 difference from the first row on the same
questions with its paired standard error, EM, F1 and EM with snapping, evaluation q/s.
Run folders are kept under --out; a variant whose run finished is evaluated again, not retrained.

With --ensemble a last row evaluates the ensemble of the --variant rows' adapters (`koqa eval
--adapter A --adapter B ...`), against the recipe's row; its training minutes and questions are the
members' sums. Two 30-minute members spend the recipe's hour:

    .venv/bin/python bench/korquad_recipe.py --out runs/ens30 --ensemble \
        --variant "seed 42:seed=42;max_minutes=30" --variant "seed 7:seed=7;max_minutes=30"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, koqa_cli, parse_variant, prepared_korquad, read_json  # noqa: E402
from koqa.errors import KoqaError  # noqa: E402
from koqa.eval.compare import paired_difference, read_scores  # noqa: E402
from koqa.runs import RunFolder  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "koqa" / "configs" / "korquad_hour.yaml"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default: the recipe's 60)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value;key=value")
    parser.add_argument("--no-recipe", action="store_true", help="only the variants")
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--out", default="runs/recipe")
    parser.add_argument("--ensemble", action="store_true", help="add a row for the ensemble of the variants' adapters")
    args = parser.parse_args()

    out = Path(args.out)
    data = prepared_korquad(out)
    runs = [] if args.no_recipe else [("recipe", [])]
    runs += [parse_variant(v) for v in args.variant]
    rows, per_question, members = [], [], []
    report = Results(
        f"korquad_recipe-{slug(out.name)}", f"KorQuAD recipe and variants — bench/korquad_recipe.py --out {args.out}"
    )
    for index, (name, overrides) in enumerate(runs):
        run_dir = out / slug(name)
        if not (run_dir / "metrics.json").is_file():
            command = ["sft", "--config", str(RECIPE), "--data", str(data), "--out", str(run_dir)]
            command += ["--max-minutes", str(args.minutes)] if args.minutes else []
            command += [arg for item in overrides for arg in ("--set", item)]
            command += ["--resume"] if RunFolder(run_dir).holds_a_run() else []
            koqa_cli(*command)
        summary = read_json(run_dir / "metrics.json")
        if args.no_recipe or index > 0:  # the recipe's own row is the baseline, not a member
            members.append((run_dir, summary["train_seconds"], summary["questions_seen"]))
        rows.append(
            evaluated_row(
                name,
                "; ".join(overrides) or "-",
                [run_dir],
                out / f"eval-{slug(name)}",
                summary["train_seconds"],
                summary["questions_seen"],
                data,
                args,
                per_question,
            )
        )
        print(report.table(HEADERS, rows, title="runs"), flush=True)
    if args.ensemble:
        if len(members) < 2:
            raise SystemExit("--ensemble needs at least two --variant rows")
        rows.append(
            evaluated_row(
                "ensemble of the variants",
                "-",
                [m[0] for m in members],
                out / "eval-ensemble",
                sum(m[1] for m in members),
                sum(m[2] for m in members),
                data,
                args,
                per_question,
            )
        )
        print(report.table(HEADERS, rows, title="runs"), flush=True)
    report.write()


HEADERS = [
    "variant",
    "overrides",
    "train min",
    "questions seen",
    "eval n",
    "F1",
    "ΔF1 vs row 1 ± s.e.",
    "EM",
    "F1 snap",
    "EM snap",
    "eval q/s",
]


def evaluated_row(name, overrides, run_dirs, eval_dir, train_seconds, questions_seen, data, args, per_question):
    """Evaluate one adapter (or, given several, their ensemble) with and without span snapping."""
    scores = {}
    for span in ("off", "snap"):  # the second pass re-scores the same generations
        started = time.perf_counter()
        command = ["eval", "--data", str(data / "validation.jsonl"), "--out", str(eval_dir), "--span", span]
        command += [arg for run_dir in run_dirs for arg in ("--adapter", str(run_dir))]
        koqa_cli(*command, *(["--limit", str(args.eval_limit)] if args.eval_limit else []))
        scores[span] = read_json(eval_dir / "metrics.json")
        scores[span]["seconds"] = time.perf_counter() - started
        if span == "off":
            per_question.append(read_scores(eval_dir / "predictions.csv", "f1"))
    m = scores["off"]
    # each row against the first, on the same questions: the paired difference and its standard error
    delta = "-"
    if len(per_question) > 1:
        try:
            diff = paired_difference(per_question[0], per_question[-1])
            delta = f"{diff.mean:+.4f} ± {diff.standard_error:.4f}"
        except KoqaError:  # evaluated on other questions (another --eval-limit): no paired difference
            pass
    # None when every answer came from an earlier run's generations.jsonl (and for an ensemble, whose
    # members report their own): no rate to report
    qps = f"{m['questions_per_second']:.2f}" if m.get("questions_per_second") else "-"
    return [
        name,
        overrides,
        f"{train_seconds / 60:.1f}",
        questions_seen,
        m["n"],
        f"{m['f1']:.4f}",
        delta,
        f"{m['exact_match']:.4f}",
        f"{scores['snap']['f1']:.4f}",
        f"{scores['snap']['exact_match']:.4f}",
        qps,
    ]


if __name__ == "__main__":
    main()
