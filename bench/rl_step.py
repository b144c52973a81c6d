"""A GRPO step of `koqa rl` against TRL's GRPOTrainer with its defaults, on the same questions.

    .venv/bin/python bench/rl_step.py [--questions 8] [--steps 3] [--skip 1] [--generations 8]

All rows start from the same base model (the embedded default) with the same fresh LoRA (r=16 on every
projection, seed 0), answer the same distinct KorQuAD training-article questions, rendered with koqa's
template and the `koqa sft` lengths (max_length 512, contexts cut to 1,200 characters around the
answer), sample --generations answers of at most 32 tokens per question at temperature 1, two
questions a step, and are scored by koqa's reward (F1, grounded, length):

    TRL GRPOTrainer        TRL's own generation (`generate` over the repeated prompts) and loss (each
                           sample a whole sequence), with its defaults
    koqa, unshared         koqa's trainer with shared_prompt false: its sampler and TRL's loss
    koqa rl                shared_prompt true (the default): each prompt computed once per question
                           in sampling, and once in the loss, where every answer is a branch over it

Seconds per step and tokens per second count the steps after --skip. Tokens are TRL's count for every
row (prompt tokens once per sample plus the answers): the work the unshared computation does, so
the rates compare as the steps' times do. Answer lengths differ between rows as the draws do; the
table shows their mean.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, bf16_matmul_flops, korquad_split  # noqa: E402


def questions(n: int):
    """The first n questions of distinct training-article passages (one question per passage)."""
    train, _ = korquad_split()
    seen, picked = set(), []
    for r in train:
        if r.context not in seen:
            seen.add(r.context)
            picked.append(r)
        if len(picked) == n:
            break
    return picked


def build(arm: str, records, args, out: Path):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from koqa.data_tools.normalize import build_normalizer
    from koqa.eval.eval_config import EvalConfig
    from koqa.model_store import resolve_model
    from koqa.prompting import NO_ANSWER, PromptRenderer, PromptTemplate
    from koqa.train.reward import AnswerReader, reward_functions
    from koqa.train.rl_trainer import KoqaGRPOTrainer
    from koqa.train.train_config import DEFAULT_TARGETS

    model_path = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    renderer = PromptRenderer(
        tokenizer, PromptTemplate.load("ko_instruct"), max_length=512, max_answer_tokens=32, max_context_chars=1200
    )
    rendered = {}
    for r in records:
        answer, start = renderer.target(r)
        rendered[r.id] = renderer.render(r.context, r.question, answer_start=start, answer_len=len(answer)).ids
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=DEFAULT_TARGETS))
    normalize = build_normalizer(EvalConfig.__dataclass_fields__["answer_normalization"].default_factory())
    grpo = GRPOConfig(
        output_dir=str(out / arm.replace(" ", "-")),
        per_device_train_batch_size=2 * args.generations,
        num_generations=args.generations,
        max_completion_length=32,
        temperature=1.0,
        max_steps=args.steps + args.skip,
        learning_rate=2e-5,
        bf16=True,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    if (
        arm == "TRL GRPOTrainer"
    ):  # text prompts, tokenized by TRL (BOS added by the tokenizer, as koqa's renderer does)
        prompts = {r.id: tokenizer.decode(rendered[r.id], skip_special_tokens=True) for r in records}
        rows = [{"prompt": prompts[r.id], "context": r.context, "answers": list(r.answers)} for r in records]
        kwargs = {}
        cls = GRPOTrainer
    else:
        rows = [{"prompt": r.id, "context": r.context, "answers": list(r.answers)} for r in records]
        kwargs = {"rendered": rendered, "max_new_tokens": 32, "shared_prompt": arm == "koqa rl"}
        cls = KoqaGRPOTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []  # (time, tokens) at the end of each step

        def on_step_end(self, a, state, control, **kw):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    clock = Clock()
    trainer = cls(
        model=model,
        reward_funcs=reward_functions(AnswerReader(normalize, NO_ANSWER)),
        args=grpo,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[clock],
        **kwargs,
    )
    return trainer, clock


def measure(arm: str, records, args, out: Path) -> dict:
    trainer, clock = build(arm, records, args, out)
    began = time.perf_counter()
    trainer.train()
    marks = [(began, 0), *clock.marks]
    first, last = marks[args.skip], marks[-1]
    seconds = (last[0] - first[0]) / args.steps
    tokens = (last[1] - first[1]) / (last[0] - first[0])
    lengths = [row["completions/mean_length"] for row in trainer.state.log_history if "completions/mean_length" in row]
    return {"s_per_step": seconds, "tokens_per_s": tokens, "answer_tokens": sum(lengths) / len(lengths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip", type=int, default=1)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--out", default="/tmp/koqa-bench-rl")
    args = parser.parse_args()
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    records = questions(args.questions)
    peak = bf16_matmul_flops()
    results = Results("rl_step", "A GRPO step: koqa rl against TRL's GRPOTrainer")
    arms = ["TRL GRPOTrainer", "koqa, unshared", "koqa rl"]
    measured = {arm: measure(arm, records, args, Path(args.out)) for arm in arms}
    base = measured["TRL GRPOTrainer"]
    rows = [
        [
            arm,
            f"{m['s_per_step']:.1f}",
            f"{m['tokens_per_s']:,.0f}",
            f"{base['s_per_step'] / m['s_per_step']:.2f}x",
            f"{m['answer_tokens']:.1f}",
        ]
        for arm, m in measured.items()
    ]
    headers = ["row", "s/step", "tokens/s", "speed-up (s/step)", "mean answer tokens"]
    print(results.table(headers, rows))
    print(
        results.note(
            f"{len(records)} distinct KorQuAD training-article questions, {args.generations} answers each, two "
            f"questions a step; {args.steps} steps timed after {args.skip}. Gemma 3 270M (the embedded default), "
            "bf16, LoRA r=16 on every projection, eager attention."
        )
    )
    results.write(peak)


if __name__ == "__main__":
    main()
