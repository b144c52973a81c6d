"""A training step before and after koqa's step speed-ups, on the one-hour recipe's own batches.

    .venv/bin/python bench/step_speed.py [--steps 50] [--skip 10] [--variant NAME:key=value;...]

Each row runs `koqa sft --config koqa/configs/korquad_hour.yaml` (LoRA r=16 on every projection,
shared contexts, batch 4) on the KorQuAD training articles for --steps optimiser steps, in a fresh
process, with the same seed and so the same batches. The learning rate follows the steps here, not
the clock, so that every row has the same rate at the same step and the loss curves compare.

    today's step      compile_layers=false, lora_dropout=0.05, attn_implementation=sdpa: the step
                      koqa took before
    no LoRA dropout   compile_layers=false, lora_dropout=0, attn_implementation=sdpa
    compiled layers   compile_layers=true, attn_implementation=sdpa: compiled decoder layers, SDPA's
                      attention kernels
    koqa's default    the recipe as shipped with compile_layers=true (what unset means for its
                      hour-long runs): compiled decoder layers, eager (matmul) attention on CPU, no
                      LoRA dropout

Tokens/s (prompt and answer tokens, padding excluded) and s/step count the steps after --skip:
compiling happens in the first steps, and its cost is its own column (the first --skip steps' time
beyond the steady rate). Useful FLOPs are 4 x body parameters x tokens + 4 x LM-head parameters x
answer tokens (the answer share of the whole training set), the same count for every row. Peak
memory is the training process's resident high-water mark over the row's steps. The loss columns
compare each row's loss at every step with today's step over all --steps steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    Results,
    bf16_matmul_flops,
    body_and_head_params,
    koqa_cli,
    parse_variant,
    prepared_korquad,
)

RECIPE = Path(__file__).resolve().parents[1] / "koqa" / "configs" / "korquad_hour.yaml"
# every row sets what it is named for: compile_layers unset turns compiling off for runs under 50 steps
UNCOMPILED, COMPILED, SDPA = "compile_layers=false", "compile_layers=true", "attn_implementation=sdpa"
TODAY = [UNCOMPILED, "lora_dropout=0.05", SDPA]
ROWS = [
    ("today's step (compile_layers=false, lora_dropout=0.05, attn_implementation=sdpa)", TODAY),
    ("no LoRA dropout (compile_layers=false, attn_implementation=sdpa)", [UNCOMPILED, "lora_dropout=0", SDPA]),
    ("compiled layers (compile_layers=true, attn_implementation=sdpa)", [COMPILED, SDPA]),
    ("koqa's default (compiled layers, eager attention, no LoRA dropout)", [COMPILED]),
]
TOLERANCE = 0.05  # the loss may differ from today's step by this share of its mean, step for step


def step_rows(run: Path) -> list[dict]:
    from koqa.runs import RunFolder

    return [r for r in RunFolder(run).log_rows() if "loss" in r]


def run_row(data: Path, out: Path, steps: int, overrides: list[str]) -> list[dict]:
    if not (out / "metrics.json").is_file():
        sets = [
            "schedule_over=steps",
            "max_minutes=null",
            "logging_steps=1",
            "save_steps=100000",
            "validation_limit=0",
            *overrides,
        ]
        args = ["sft", "--config", str(RECIPE), "--data", str(data), "--out", str(out), "--max-steps", str(steps)]
        koqa_cli(*args, *[item for s in sets for item in ("--set", s)])
    return step_rows(out)


def answer_share(data: Path) -> float:
    """Answer tokens over all tokens of the recipe's shared-context training sequences."""
    from koqa.model_store import prepare_default_model
    from koqa.prompting import PromptTemplate
    from koqa.settings import load
    from koqa.train import TrainConfig
    from koqa.train.data import load_training_data
    from koqa.train.run import load_tokenizer

    config = load(TrainConfig, config_file=RECIPE, flags={"data": str(data), "out": "unused"})
    _, renderer = load_tokenizer(str(prepare_default_model()), PromptTemplate.load(config.template), config)
    examples = load_training_data(config, renderer).examples
    return sum(sum(e["completion_mask"]) for e in examples) / sum(len(e["input_ids"]) for e in examples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--skip", type=int, default=10, help="first steps left out of the rates")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value;key=value (extra row)")
    parser.add_argument("--out", default="runs/step_speed")
    args = parser.parse_args()
    if not 0 < args.skip < args.steps - 1:
        parser.error("--skip must leave at least two steps to time")

    from koqa.model_store import prepare_default_model

    out = Path(args.out)
    data = prepared_korquad(out) / "train.jsonl"
    model = str(prepare_default_model())
    body, head = body_and_head_params(model)
    share = answer_share(data)
    peak = bf16_matmul_flops()
    rows = ROWS + [(f"{name} ({'; '.join(sets)})", sets) for name, sets in map(parse_variant, args.variant)]
    logs = [run_row(data, out / f"row{i}", args.steps, sets) for i, (_, sets) in enumerate(rows)]

    today = [r["loss"] for r in logs[0]]
    today_mean = sum(today) / len(today)
    table, base = [], None
    for (name, _), log in zip(rows, logs):
        first, last = log[args.skip - 1], log[-1]
        seconds = last["trained_s"] - first["trained_s"]
        tokens = last["num_tokens"] - first["num_tokens"]
        step_s = seconds / (len(log) - args.skip)
        tps = tokens / seconds
        base = base or tps
        warm_extra = first["trained_s"] - args.skip * step_s
        flops = (4 * body + 4 * head * share) * tps
        losses = [r["loss"] for r in log]
        gaps = [abs(a - b) for a, b in zip(losses, today)]
        mean_gap = sum(gaps) / len(gaps)
        table.append(
            [
                name,
                f"{tps:,.0f}",
                f"{step_s:.2f}",
                f"**{tps / base:.2f}x**" if tps != base else "1.00x",
                f"{warm_extra:+.0f}",
                f"{flops / 1e9:.0f}",
                f"{flops / peak:.0%}",
                f"{sum(losses) / len(losses):.4f}",
                f"{mean_gap:.4f} ({mean_gap / today_mean:.1%})",
                "yes" if mean_gap <= TOLERANCE * today_mean else "**no**",
                f"{max(r.get('max_rss_mb', 0) for r in log) / 1024:.1f}",
            ]
        )
    report = Results("step_speed", "A training step before and after — bench/step_speed.py")
    print(
        report.note(
            f"korquad_hour.yaml batches (shared contexts, batch 4, LoRA r=16), {args.steps} steps a row, rates over "
            f"steps {args.skip + 1}-{args.steps}; answer tokens {share:.1%} of all; machine bf16 matmul "
            f"{peak / 1e9:.0f} GFLOP/s; loss tolerance: mean |loss - today's| per step <= {TOLERANCE:.0%} of "
            f"today's mean loss over the {args.steps} steps"
        )
    )
    print(
        report.table(
            [
                "step",
                "tokens/s",
                "s/step",
                "vs today",
                "first steps' extra s",
                "useful GFLOP/s",
                "of bf16 peak",
                f"mean loss, steps 1-{args.steps}",
                "mean abs loss gap to today",
                "within tolerance",
                "peak memory GB",
            ],
            table,
        )
    )
    report.write(peak)


if __name__ == "__main__":
    main()
