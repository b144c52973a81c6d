"""The one-hour KorQuAD recipe and variants of it, as a `koqa sweep`.

    .venv/bin/python bench/korquad_recipe.py
    .venv/bin/python bench/korquad_recipe.py --minutes 10 --eval-limit 300 \\
        --variant "schedule over steps:schedule_over=steps" --variant "lr 2e-4:learning_rate=2e-4"

Preprocesses KorQuAD once (training articles / evaluation articles, as in the data notice), then runs
`koqa sweep` with koqa/configs/korquad_hour.yaml as the base and each --variant (NAME:key=value;...)
over it: every variant is trained, scored on the evaluation articles' questions (all 1,287 unless
--eval-limit) and tabulated against the recipe with paired intervals. Run folders are kept under
--out; an interrupted run continues, and finished variants are not retrained.

With --ensemble a last row evaluates the ensemble of the --variant rows' adapters (`koqa eval
--adapter A --adapter B ...`), compared with the recipe by `koqa compare`:

    .venv/bin/python bench/korquad_recipe.py --out runs/ens30 --ensemble \\
        --variant "seed 42:seed=42;max_minutes=30" --variant "seed 7:seed=7;max_minutes=30"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, koqa_cli, prepared_korquad  # noqa: E402
from koqa.eval.compare import CompareConfig, compare  # noqa: E402
from koqa.settings import check  # noqa: E402
from koqa.sweep import SweepConfig, sweep  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "koqa" / "configs" / "korquad_hour.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default: the recipe's 60)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value;key=value")
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--out", default="runs/recipe")
    parser.add_argument("--ensemble", action="store_true", help="add a row for the ensemble of the variants' adapters")
    args = parser.parse_args()

    out = Path(args.out)
    data = prepared_korquad(out)
    config = SweepConfig(
        out=str(out / "sweep"),
        data=str(data),
        base=str(RECIPE),
        variant=args.variant,
        eval_limit=args.eval_limit,
        sft={"max_minutes": args.minutes} if args.minutes else {},
    )
    result = sweep(check(config))
    name = "".join(c if c.isalnum() else "-" for c in out.name.lower())
    report = Results(
        f"korquad_recipe-{name}", f"KorQuAD recipe and variants — bench/korquad_recipe.py --out {args.out}"
    )
    print(report.note(result["markdown"]))
    if args.ensemble:
        members = result["rows"][1:]
        if len(members) < 2:
            raise SystemExit("--ensemble needs at least two --variant rows")
        ensemble_dir = out / "eval-ensemble"
        command = ["eval", "--data", str(data / "validation.jsonl"), "--out", str(ensemble_dir)]
        command += [arg for row in members for arg in ("--adapter", row["run"])]
        koqa_cli(*command, *(["--limit", str(args.eval_limit)] if args.eval_limit else []))
        base_eval = str(Path(result["rows"][0]["run"]).parent / "eval")
        compared = compare(CompareConfig(runs=[base_eval, str(ensemble_dir)], out=str(ensemble_dir)))
        minutes = sum(row["minutes"] for row in members)
        print(
            report.note(
                f"Ensemble of the variants ({minutes:.1f} training minutes in all):\n\n" + compared["markdown"]
            )
        )
    report.write()


if __name__ == "__main__":
    main()
