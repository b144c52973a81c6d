"""Equal CPU minutes after a supervised run: more `koqa sft`, or `koqa rl`?

    .venv/bin/python bench/rl_quality.py [--minutes 10] [--start-minutes M] [--out runs/rlq] [--eval-limit N]
                                         [--rl-set KEY=VALUE ...]

The last 40 passages of the KorQuAD training articles are held out: their questions are `koqa rl`'s
validation set (best/ and the divergence stop are chosen on them), and no run trains on them, so
the choice is made on questions none of the adapters has seen. The evaluation articles stay unseen
by every choice.

1. `koqa sft` with koqa/configs/korquad_hour.yaml for --start-minutes (default: --minutes) on the
   other training-article questions (the recipe's 10-minute run): the start.
2. (a) that run continued with `koqa sft --resume` for --minutes more (its time budget raised by
   --minutes), and (b) `koqa rl` from its final adapter for --minutes on the same questions, with
   its held-out evaluations through vLLM every 16 steps on 100 questions (RL_EVALUATION: a small
   part of its minutes, which they count in) and the --rl-set settings.
3. The start, (a), (b)'s best/ and (b)'s final adapter answer all 1,287 evaluation-article
   questions (`koqa eval`), and `koqa compare` sets each against the start and (b) against (a),
   with paired intervals; the error classes that moved are counted from each evaluation's
   metrics.json, and the share of (b)'s minutes spent on its held-out evaluations from its log.

Run folders stay under --out; a finished step is not redone when the script runs again. Results go
to bench/results/rl_quality_<start minutes>_then_<minutes>[_<rl setting>_<value>...].md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, koqa_cli, prepared_korquad, read_json  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "koqa" / "configs" / "korquad_hour.yaml"
HELD_OUT_PASSAGES = 40
RL_EVALUATION = ("eval_steps=16", "eval_limit=100", "eval_backend=vllm")


def split_held_out(data: Path, out: Path) -> tuple[Path, Path]:
    """The training questions but those of the last HELD_OUT_PASSAGES passages, and those."""
    rl_train, rl_val = out / "rl-train.jsonl", out / "rl-validation.jsonl"
    if not rl_val.is_file():
        rows = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
        passages = list(dict.fromkeys(row["context"] for row in rows))
        held = set(passages[-HELD_OUT_PASSAGES:])
        rl_train.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if r["context"] not in held)
        )
        rl_val.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if r["context"] in held))
    return rl_train, rl_val


def evaluate(run: Path, checkpoint: str, data: Path, out: Path, limit: int | None) -> Path:
    if not (out / "metrics.json").is_file():
        command = ["eval", "--data", str(data / "validation.jsonl"), "--adapter", str(run), "--out", str(out)]
        koqa_cli(*command, "--checkpoint", checkpoint, *(["--limit", str(limit)] if limit else []))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="each arm's minutes after the start")
    parser.add_argument("--start-minutes", type=float, default=None, help="the start's minutes (default: --minutes)")
    parser.add_argument("--out", default="runs/rlq")
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--rl-set", action="append", default=[], metavar="KEY=VALUE", help="a koqa rl setting")
    args = parser.parse_args()
    from koqa.eval.compare import CompareConfig, compare
    from koqa.runs import RunFolder

    out = Path(args.out)
    first = args.minutes if args.start_minutes is None else args.start_minutes
    data = prepared_korquad(out)
    start, more, rl = out / "sft", out / "sft-more", out / "rl"
    rl_train, rl_val = split_held_out(data, out)
    recipe = ["--config", str(RECIPE), "--data", str(rl_train)]
    if not (start / "metrics.json").is_file():
        koqa_cli("sft", *recipe, "--out", str(start), "--max-minutes", str(first))
    trained = read_json(more / "metrics.json")["train_seconds"] if (more / "metrics.json").is_file() else 0.0
    if trained < 60 * first + 30 * args.minutes:  # not yet continued (the copy of the start holds its metrics)
        if not more.exists():
            shutil.copytree(start, more)
        koqa_cli("sft", *recipe, "--out", str(more), "--max-minutes", str(first + args.minutes), "--resume")
    if not (rl / "metrics.json").is_file():
        settings = [arg for pair in (*RL_EVALUATION, *args.rl_set) for arg in ("--set", pair)]
        koqa_cli(
            "rl", "--adapter", str(start), "--checkpoint", "final", "--data", str(rl_train),
            "--validation", str(rl_val), "--out", str(rl), "--max-minutes", str(args.minutes), *settings,
        )  # fmt: skip
    evals = {
        "start": evaluate(start, "final", data, out / "eval-sft", args.eval_limit),
        "more sft": evaluate(more, "final", data, out / "eval-sft-more", args.eval_limit),
        "rl": evaluate(rl, "best", data, out / "eval-rl", args.eval_limit),
        "rl final": evaluate(rl, "final", data, out / "eval-rl-final", args.eval_limit),
    }
    against_start = compare(CompareConfig(runs=[str(p) for p in evals.values()], out=str(out / "compare")))
    rl_vs_sft = compare(
        CompareConfig(
            runs=[str(evals["more sft"]), str(evals["rl"]), str(evals["rl final"])], out=str(out / "compare-rl-vs-sft")
        )
    )
    tag = "".join(f"_{pair.replace('=', '_')}" for pair in args.rl_set)
    report = Results(
        f"rl_quality_{first:g}_then_{args.minutes:g}{tag}",
        f"{args.minutes:g} equal CPU minutes after a {first:g}-minute supervised run: more sft or rl",
    )
    rl_metrics = read_json(rl / "metrics.json")
    evaluating = sum(row.get("eval_seconds", 0.0) for row in RunFolder(rl).log_rows())
    best = rl_metrics.get("best")
    chosen = (
        f"best validation F1 {best['eval_f1']:.4f} at step {best['step']} on {best['eval_questions']} held-out "
        "training-article questions"
        if best
        else "no evaluation within the budget: the final adapter"
    )
    print(
        report.note(
            f"`koqa rl` (settings: {', '.join([*RL_EVALUATION, *args.rl_set])}): {rl_metrics['global_step']} steps "
            f"in {rl_metrics['train_seconds'] / 60:.1f} minutes, {evaluating / 60:.1f} of them "
            f"({evaluating / rl_metrics['train_seconds']:.0%}) on held-out evaluations; {chosen}"
            + ("; it stopped on a reward that rose while F1 fell" if rl_metrics.get("diverged") else "")
            + f". More `koqa sft`: {read_json(more / 'metrics.json')['train_seconds'] / 60:.1f} minutes in all."
            + (f" Scored on the first {args.eval_limit} evaluation questions." if args.eval_limit else "")
        )
    )
    print(report.note("Each against the start:\n\n" + against_start["markdown"]))
    print(report.note("`koqa rl` against more `koqa sft`:\n\n" + rl_vs_sft["markdown"]))
    classes = {name: read_json(path / "metrics.json").get("errors", {}) for name, path in evals.items()}
    kinds = sorted({k for c in classes.values() for k in c})
    rows = [[kind, *(classes[name].get(kind, 0) for name in evals)] for kind in kinds]
    print(report.table(["error class", *evals], rows, title="Error classes (questions)"))
    report.write()


if __name__ == "__main__":
    main()
