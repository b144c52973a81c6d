"""Where a training step's time goes: a torch profiler trace of recipe steps, summarised.

    .venv/bin/python bench/profile_step.py [--steps 4] [--trace runs/profile/trace.json]

The recipe of koqa/configs/korquad_hour.yaml (LoRA r=16 on every projection, shared contexts, batch 4,
bf16 where the CPU has it) on KorQuAD training articles, through `koqa sft` itself. After one warm-up
step, --steps steps are recorded with shapes; each operator's own time is put in one class:

- matmuls of frozen weights: mm/addmm/bmm/linear whose shapes hold neither the LoRA rank nor the
  vocabulary (forward, and the activation gradients of backward);
- LoRA matmuls: those with the LoRA rank in their shapes (the adapters' forward and gradients);
- LM head: matmuls with the vocabulary in their shapes (koqa runs it at answer positions only);
- attention: scaled-dot-product attention forward and backward, or eager attention's batched
  matmuls and softmax; inside compiled layers (`--set compile_layers=true`) eager attention's
  operators do not reach the trace as these events, and this class then reads 0;
- norms, activations and other elementwise ops (RMSNorm's pow/mean/rsqrt/mul, GELU's tanh, adds,
  dropout, casts and copies);
- optimizer: everything under AdamW's step;
- data and masks: the data loader and the collator (shared-context masks are built there);
- Python and the rest: the step's wall time not covered by an operator.

Seconds are per step; the shares add to 100%. `--trace` also writes a Chrome trace; `--set
key=value` changes the recipe (`--set compile_layers=true --warmup 4`: compiled layers, after the
steps that compile them; `--set lora_dropout=0.05 --set compile_layers=false`: the step before them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, korquad_split  # noqa: E402

CLASSES = (
    "matmuls of frozen weights",
    "LoRA matmuls",
    "LM head (answer positions)",
    "attention",
    "norms, activations, elementwise",
    "optimizer",
    "data and masks",
    "Python and the rest",
)
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_addmm_activation")


def classify(name: str, shapes: str, rank: int, vocab: int) -> str:
    if name in MATMULS:
        if str(vocab) in shapes:
            return "LM head (answer positions)"
        dims = {int(x) for x in shapes.replace("[", " ").replace("]", " ").replace(",", " ").split() if x.isdigit()}
        if rank in dims:
            return "LoRA matmuls"
        # linear layers reach mm/addmm; batched matmuls are eager attention's scores and weighted values
        return "attention" if name == "aten::bmm" else "matmuls of frozen weights"
    if any(word in name.lower() for word in ("attention", "sdpa", "softmax")):
        return "attention"
    return "norms, activations, elementwise"


def summarise(prof, steps: int, step_total: float, rank: int, vocab: int) -> dict[str, float]:
    """Seconds per step by class, from the profiler's events; `step_total`: the profiled steps' wall time."""
    events = prof.events()
    spans = {"optimizer": [], "data and masks": []}
    for e in events:
        if e.name.startswith("Optimizer.step#"):
            spans["optimizer"].append((e.time_range.start, e.time_range.end))
        elif "DataLoader" in e.name and "__next__" in e.name:
            spans["data and masks"].append((e.time_range.start, e.time_range.end))
    seconds = dict.fromkeys(CLASSES, 0.0)
    for e in events:
        if not e.name.startswith("aten::") or e.device_type.name != "CPU":
            continue
        start = e.time_range.start
        where = next((k for k, ranges in spans.items() if any(a <= start < b for a, b in ranges)), None)
        key = where or classify(e.name, str(e.input_shapes), rank, vocab)
        seconds[key] += e.self_cpu_time_total / 1e6
    covered = sum(seconds.values())
    seconds["Python and the rest"] = max(step_total - covered, 0.0)
    return {k: v / steps for k, v in seconds.items()}, step_total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--trace", type=Path)
    parser.add_argument(
        "--set", action="append", default=[], help="key=value over the recipe (e.g. compile_layers=true)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded steps first (compiling needs a few)")
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig, TrainerCallback

    import koqa.train.run as run_module
    from koqa.data_tools.records import write_jsonl
    from koqa.model_store import prepare_default_model
    from koqa.settings import load, read_config_file
    from koqa.train import TrainConfig, train

    model = str(prepare_default_model())
    vocab = AutoConfig.from_pretrained(model).vocab_size
    recipe = read_config_file(str(Path(__file__).parents[1] / "koqa" / "configs" / "korquad_hour.yaml"))
    rank = int(recipe["lora_r"])
    schedule = torch.profiler.schedule(wait=args.warmup - 1, warmup=1, active=args.steps, repeat=1)
    profiler = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], schedule=schedule, record_shapes=True, with_stack=False
    )

    walls = []  # each step's wall time, data loading included (from the end of the step before)

    class Step(TrainerCallback):
        last = None

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            if self.last is not None:
                walls.append(now - self.last)
            self.last = now
            profiler.step()

    build = run_module.build_trainer

    def build_with_profiler(*a, **kw):
        trainer = build(*a, **kw)
        trainer.add_callback(Step())
        return trainer

    run_module.build_trainer = build_with_profiler
    train_records, _ = korquad_split()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        write_jsonl(data, (r.to_json() for r in train_records[:400]))
        sets = [f"{k}={json.dumps(v)}" for k, v in recipe.items() if k not in ("max_minutes", "schedule_over")]
        config = load(
            TrainConfig,
            sets=[*sets, "logging_steps=1", "save_steps=100000", *args.set],
            flags={"data": str(data), "out": str(Path(tmp) / "run"), "max_steps": args.steps + args.warmup + 1},
        )
        started = time.perf_counter()
        with profiler:
            train(config)
        wall = time.perf_counter() - started
    if args.trace:
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(args.trace))
    # the profiler records the steps after the first --warmup ones; walls[i] is step i+2's time
    recorded = sum(walls[args.warmup - 1 : args.warmup - 1 + args.steps])
    per_step, step_seconds = summarise(profiler, args.steps, recorded, rank, vocab)
    rows = [[name, f"{per_step[name]:.2f}", f"{per_step[name] / step_seconds:.1%}"] for name in CLASSES]
    rows.append(["one step", f"{step_seconds:.2f}", "100%"])
    name, title = "profile_step", "Where a training step goes — bench/profile_step.py"
    if args.set:
        name += "-" + "-".join("".join(c if c.isalnum() else "_" for c in s) for s in args.set)
        title += " " + " ".join(f"--set {s}" for s in args.set)
    results = Results(name, title)
    print(results.table(["class", "seconds per step", "share"], rows))
    print(
        results.note(
            f"The korquad_hour recipe (LoRA r={rank}, shared contexts, batch {recipe['batch_size']}"
            f"{''.join(', ' + s for s in args.set)}) on KorQuAD training articles, {args.steps} profiled steps "
            f"after {args.warmup} warm-up step{'s' if args.warmup > 1 else ''} ({wall:.0f} s in all with the "
            "profiler on); operators' own CPU time by class, the rest of each step's wall time as Python."
        )
    )
    results.write()


if __name__ == "__main__":
    main()
