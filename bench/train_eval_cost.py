"""What leaderboard F1 during training costs, and which generation path it should take.

    .venv/bin/python bench/train_eval_cost.py [--questions 200] [--steps 6] [--out runs/train-eval-cost]

Trains the default model with the recipe (koqa/configs/korquad_hour.yaml, scheduled over steps here)
on the KorQuAD training articles for --steps optimiser steps with `eval_steps` at the middle and the
end, so that each run scores the first --questions validation questions (real, distinct KorQuAD
questions on their real passages) twice: once with `eval_backend: hf` (the transformers backend in
the training process, over the live weights) and once with `eval_backend: vllm` (the adapter saved,
merged into a copy of the model and served by a vLLM engine in a child process: merge and engine
start paid at every evaluation). Prints, side by side: seconds of one training step, and of each
evaluation on each path with its share of a step and its F1. A finished run under --out is reused
(--retrain to train again).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, koqa_cli, prepared_korquad  # noqa: E402
from koqa.runs import RunFolder  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "koqa" / "configs" / "korquad_hour.yaml"
PATHS = ("hf", "vllm")


def train(run: RunFolder, data: Path, backend: str, args) -> None:
    shutil.rmtree(run.path, ignore_errors=True)
    koqa_cli(
        "sft", "--config", str(RECIPE), "--data", str(data), "--out", str(run.path),
        "--max-steps", str(args.steps), "--set", "schedule_over=steps", "--set", "max_minutes=null",
        "--set", "logging_steps=1", "--set", "save_steps=1000",
        "--set", f"eval_steps={args.steps // 2}", "--set", f"eval_limit={args.questions}",
        "--set", f"eval_backend={backend}",
    )  # fmt: skip


def step_seconds(rows: list[dict]) -> float:
    """Seconds of a training step: the training clock from the first to the last logged step, less
    the evaluations in between (the clock counts them)."""
    losses = [r for r in rows if "loss" in r]
    inside = sum(
        r["eval_seconds"] for r in rows if "eval_f1" in r and losses[0]["step"] < r["step"] <= losses[-1]["step"]
    )
    return (losses[-1]["trained_s"] - losses[0]["trained_s"] - inside) / (losses[-1]["step"] - losses[0]["step"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps; evaluations at the middle and the end")
    parser.add_argument("--out", default="runs/train-eval-cost")
    parser.add_argument("--retrain", action="store_true", help="train again even where --out holds finished runs")
    args = parser.parse_args()
    out = Path(args.out)
    data = prepared_korquad(out)
    table, cost = [], {}
    for backend in PATHS:
        run = RunFolder(out / f"run-{backend}")
        if args.retrain or not run.metrics_file.is_file():
            train(run, data, backend, args)
        rows = run.log_rows()
        step = step_seconds(rows)
        table.append([f"eval_backend {backend}: one training step", "", f"{step:.2f}", "1.0", ""])
        for r in (r for r in rows if "eval_f1" in r):
            cost.setdefault(backend, []).append(r["eval_seconds"])
            table.append(
                [f"eval_backend {backend}: evaluation at step {r['step']}", r["eval_questions"],
                 f"{r['eval_seconds']:.1f}", f"{r['eval_seconds'] / step:.1f}", f"{r['eval_f1']:.4f}"]
            )  # fmt: skip
    results = Results("train_eval_cost", "Leaderboard F1 during training: what one evaluation costs")
    print(results.table(["what", "questions", "seconds", "steps' worth", "F1"], table, title="Cost of one evaluation"))
    fastest = min(PATHS, key=lambda b: sum(cost[b]) / len(cost[b]))
    mean = {b: sum(cost[b]) / len(cost[b]) for b in PATHS}
    print(
        results.note(
            f"{args.questions} real KorQuAD validation questions (distinct questions, real passage lengths), the "
            f"default model after {args.steps} recipe steps. Mean seconds an evaluation: hf {mean['hf']:.1f}, vllm "
            f"{mean['vllm']:.1f} (merge and engine start included): {fastest} is the faster path here "
            f"({max(mean.values()) / min(mean.values()):.1f}x). The two paths' F1 differ where bf16 answers differ."
        )
    )
    results.write()


if __name__ == "__main__":
    main()
