"""Training throughput: `koqa sft` against a notebook-style baseline, same model and data.

    .venv/bin/python bench/sft_speed.py [--steps 6] [--baseline-steps 3] [--batch-size 4]
    .venv/bin/python bench/sft_speed.py --no-baseline --variant "no LoRA dropout:lora_dropout=0"

Baseline (what contest notebooks do): fp32, every example padded to max_length=1024, the model's
own loss over full [batch, 1024, 262k] logits, LoRA through PEFT, torch AdamW.
koqa: the same LoRA through TRL's SFTTrainer with bf16 (where the CPU has it), dynamic padding,
length grouping, and the LM head applied at answer positions only; shown on the same full-length
examples and with the shipped recipe (contexts cut to 1,200 characters around the answer); each
--variant NAME:key=value;... adds a row: the recipe with those `koqa sft --set` overrides.
Throughput counts prompt and answer tokens, padding excluded.  Useful FLOPs per step are counted as
4 x body parameters x tokens (forward + activation gradients of the frozen base) + 4 x LM-head
parameters x answer tokens, the same for every row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, bf16_matmul_flops, body_and_head_params, korquad_split, parse_variant  # noqa: E402


def baseline(model_dir, examples, batch_size, steps, max_length=1024):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from koqa.train.train_config import DEFAULT_TARGETS

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=DEFAULT_TARGETS)
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    times, tokens = [], []
    for step in range(steps + 1):  # the first step warms up and is not timed
        batch = examples[step * batch_size : (step + 1) * batch_size]
        ids = torch.zeros((len(batch), max_length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, ex in enumerate(batch):
            n = min(len(ex["input_ids"]), max_length)
            ids[row, :n] = torch.tensor(ex["input_ids"][:n])
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(
                [t if m else -100 for t, m in zip(ex["input_ids"], ex["completion_mask"])][:n]
            )
        started = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            times.append(time.perf_counter() - started)
            tokens.append(int(mask.sum()))
    return sum(tokens) / sum(times), sum(times) / len(times), sum(tokens)


def koqa_run(data_file, out_dir, steps, batch_size, overrides):
    from koqa.runs import RunFolder
    from koqa.settings import load
    from koqa.train import TrainConfig, train

    sets = [
        f"batch_size={batch_size}",
        "logging_steps=1",
        "validation_limit=0",
        "save_steps=100000",
        "warmup_ratio=0",
        *overrides,
    ]
    train(load(TrainConfig, sets=sets, flags={"data": str(data_file), "out": str(out_dir), "max_steps": steps + 1}))
    steps_rows = [r for r in RunFolder(Path(out_dir)).log_rows() if "loss" in r]
    # the first step warms up; tokens and seconds of the others
    tokens = steps_rows[-1]["num_tokens"] - steps_rows[0]["num_tokens"]
    seconds = steps_rows[-1]["elapsed_s"] - steps_rows[0]["elapsed_s"]
    return tokens / seconds, seconds / (len(steps_rows) - 1), tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--baseline-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value;key=value (extra row)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the notebook baseline and TRL-loss rows (ratios are then to the recipe)",
    )
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.variant]

    from transformers import AutoTokenizer

    from koqa.data_tools.records import write_jsonl
    from koqa.model_store import prepare_default_model
    from koqa.prompting import PromptRenderer, PromptTemplate
    from koqa.train.data import build_examples

    model = str(prepare_default_model())
    train, _ = korquad_split()
    need = (max(args.steps, args.baseline_steps) + 1) * args.batch_size
    records = train[:need]
    tokenizer = AutoTokenizer.from_pretrained(model)
    full = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=1024)
    examples, _ = build_examples(records, full)
    body, head = body_and_head_params(model)
    peak = bf16_matmul_flops()
    answer_share = sum(sum(e["completion_mask"]) for e in examples) / sum(len(e["input_ids"]) for e in examples)

    def useful_flops(tokens):
        return 4 * body * tokens + 4 * head * tokens * answer_share

    results = []
    if not args.no_baseline:
        tps, step_s, tokens = baseline(model, examples, args.batch_size, args.baseline_steps)
        results.append(["notebook baseline: fp32, pad to 1024, full logits", tps, step_s])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        write_jsonl(data, (r.to_json() for r in records))
        if not args.no_baseline:
            tps, step_s, _ = koqa_run(
                data, Path(tmp) / "same", args.steps, args.batch_size, ["max_length=1024", "max_context_chars=null"]
            )
            results.append(["koqa sft, same full-length examples", tps, step_s])
        tps, step_s, _ = koqa_run(data, Path(tmp) / "recipe", args.steps, args.batch_size, [])
        results.append(["koqa sft, shipped recipe (contexts cut to 1,200 chars)", tps, step_s])
        if not args.no_baseline:
            tps, step_s, _ = koqa_run(
                data,
                Path(tmp) / "fullhead",
                args.steps,
                args.batch_size,
                ["max_length=1024", "max_context_chars=null", "answer_only_logits=false"],
            )
            results.append(["koqa sft without answer-only logits (TRL's loss)", tps, step_s])
        for index, (name, overrides) in enumerate(variants):
            tps, step_s, _ = koqa_run(data, Path(tmp) / f"variant{index}", args.steps, args.batch_size, overrides)
            results.append([f"recipe, {name} ({'; '.join(overrides)})", tps, step_s])
    base = results[0][1]
    rows = [
        [
            name,
            f"{tps:,.0f}",
            f"{step_s:.1f}",
            f"{tps / base:.1f}x",
            f"{useful_flops(tps) / 1e9:.0f}",
            f"{useful_flops(tps) / peak:.0%}",
        ]
        for name, tps, step_s in results
    ]
    report = Results("sft_speed", "Training throughput — bench/sft_speed.py")
    print(
        report.note(
            f"LoRA r=16 on all projections, batch {args.batch_size}, KorQuAD training articles; "
            f"machine bf16 matmul {peak / 1e9:.0f} GFLOP/s"
        )
    )
    print(
        report.table(
            ["trainer", "tokens/s (no padding)", "s/step", "vs baseline", "useful GFLOP/s", "of bf16 matmul peak"],
            rows,
        )
    )
    report.write(peak)


if __name__ == "__main__":
    main()
