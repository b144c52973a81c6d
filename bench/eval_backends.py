"""Evaluation speed and zero-shot quality of the default model.

    .venv/bin/python bench/eval_backends.py [--questions 200] [--agreement] [--vllm-compile] [--full-eval]
        [--chunk-sizes 1024,2048]

1. Throughput (questions/s) on the first N KorQuAD evaluation questions: the transformers backend
   at several batch sizes and the vLLM backend (eager with and without prefix caching, and with
   --vllm-compile also torch.compile, with and without prefix caching; and one row with vLLM's own
   CPU thread and chunk settings in place of koqa's; with --chunk-sizes also eager, caching off, with
   other prefill chunk sizes than koqa's),
   as a ratio; achieved model FLOP/s against this machine's measured bf16 matmul FLOP/s, and the rate
   the model's own weight matmuls reach alone (what the matrix shapes allow).
   Greedy-answer agreement between the backends in bf16, with --agreement also against two
   controls: transformers batch 1 vs its best batch (bf16 rounding alone), and both backends in
   float32; the leaderboard F1 of each side on the same questions.
2. With --full-eval: zero-shot leaderboard F1 / EM on all 1,287 evaluation questions, without and
   with span snapping (the snapping re-uses the same generations).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    KORQUAD,
    Results,
    attention_flops,
    bf16_matmul_flops,
    body_and_head_params,
    korquad_split,
    projection_matmul_flops,  # noqa: E402
)

MAX_NEW = 24


def char_f1_best(prediction: str, golds) -> float:
    from koqa.eval.metrics import best_over_gold, char_f1

    return best_over_gold(char_f1, prediction, golds)


def common_prefix_tokens(tokenizer, a: str, b: str) -> int:
    x, y = tokenizer(a, add_special_tokens=False).input_ids, tokenizer(b, add_special_tokens=False).input_ids
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


VLLM_CPU_DEFAULTS = (
    "eager, prefix caching off, vLLM's own CPU settings (a core kept for its scheduler, 4,096-token chunks)"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--full-eval", action="store_true")
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="also compare greedy answers: transformers batch 1, and both backends in float32",
    )
    parser.add_argument("--vllm-compile", action="store_true", help="also time vLLM with torch.compile (CPU)")
    parser.add_argument(
        "--chunk-sizes", default="", help="also time vLLM eager, caching off, with these prefill chunk sizes (tokens)"
    )
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from koqa.eval.backends import GenerationParams, load_generator, vllm_available
    from koqa.model_store import prepare_default_model
    from koqa.prompting import PromptRenderer, PromptTemplate

    model = str(prepare_default_model())
    _, evaluation = korquad_split()
    questions = evaluation[: args.questions]
    tokenizer = AutoTokenizer.from_pretrained(model)
    renderer = PromptRenderer(
        tokenizer, PromptTemplate.load("ko_instruct"), max_length=1024, max_answer_tokens=MAX_NEW
    )
    prompts = [renderer.render(r.context, r.question).ids for r in questions]
    prompt_tokens = sum(map(len, prompts))
    square = bf16_matmul_flops()
    own_shapes = {n: projection_matmul_flops(model, tokens=n) for n in (256, 2048)}
    peak = max(square, *own_shapes.values())  # the best bf16 matmul rate this run measured
    body, head = body_and_head_params(model)

    def flops(outputs) -> float:
        """Model FLOPs of the work done: weight matmuls for every prompt and generated token, the LM
        head where a token is produced, and attention over each sequence (sliding windows kept)."""
        new = [len(tokenizer(o, add_special_tokens=False).input_ids) + 1 for o in outputs]
        generated = sum(new)
        attention = attention_flops(model, [len(p) + n for p, n in zip(prompts, new)])
        return 2 * body * (prompt_tokens + generated) + 2 * head * generated + attention

    def f1_on(outputs) -> float:
        return sum(char_f1_best(o.strip(), r.answers) for o, r in zip(outputs, questions)) / len(questions)

    rows, answers = [], {}
    hf = load_generator("hf", model)
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        started = time.perf_counter()
        out = hf.generate(prompts, GenerationParams(max_new_tokens=MAX_NEW, batch_size=bs))
        seconds = time.perf_counter() - started
        answers[f"hf-{bs}"] = out
        rows.append(
            [
                f"transformers, batch {bs}",
                f"{len(prompts) / seconds:.2f}",
                f"{seconds:.0f}",
                f"{flops(out) / seconds / 1e9:.0f}",
                f"{flops(out) / seconds / peak:.0%}",
            ]
        )
    best_hf = max(rows, key=lambda r: float(r[1]))
    best_bs = int(best_hf[0].split()[-1])
    if args.agreement:
        answers["hf-1"] = hf.generate(prompts, GenerationParams(max_new_tokens=MAX_NEW, batch_size=1))
    hf.close()
    if vllm_available():
        variants = [
            ("eager", False, True, None),
            ("eager, prefix caching off", False, False, None),
            (VLLM_CPU_DEFAULTS, False, False, 4096),
        ]
        variants += [
            (f"eager, prefix caching off, {int(n):,}-token chunks", False, False, int(n))
            for n in args.chunk_sizes.split(",")
            if n
        ]
        variants += (
            [("torch.compile", True, True, None), ("torch.compile, prefix caching off", True, False, None)]
            if args.vllm_compile
            else []
        )
        for label, compile_, caching, chunk in variants:
            started = time.perf_counter()
            # the row with vLLM's own settings undoes koqa's: a core kept for the scheduler, 4,096-token chunks
            vllms_own = label == VLLM_CPU_DEFAULTS
            with mock.patch.dict(os.environ, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"} if vllms_own else {}):
                vllm = load_generator(
                    "vllm",
                    model,
                    max_model_len=1024 + MAX_NEW,
                    compile=compile_,
                    prefix_caching=caching,
                    max_num_batched_tokens=chunk,
                )
            startup = time.perf_counter() - started
            started = time.perf_counter()
            out = vllm.generate(prompts, GenerationParams(max_new_tokens=MAX_NEW))
            seconds = time.perf_counter() - started
            answers.setdefault("vllm", out)
            rows.append(
                [
                    f"vLLM {label} (engine start {startup:.0f} s, not counted)",
                    f"{len(prompts) / seconds:.2f}",
                    f"{seconds:.0f}",
                    f"{flops(out) / seconds / 1e9:.0f}",
                    f"{flops(out) / seconds / peak:.0%}",
                ]
            )
            vllm.close()  # else its workers keep spinning and slow the next row
    if args.agreement:
        fp32 = [("hf-fp32", "hf", {})]
        if vllm_available():
            fp32.append(("vllm-fp32", "vllm", {"max_model_len": 1024 + MAX_NEW}))
        for key, backend, options in fp32:
            generator = load_generator(backend, model, dtype="float32", **options)
            try:
                answers[key] = generator.generate(
                    prompts, GenerationParams(max_new_tokens=MAX_NEW, batch_size=best_bs)
                )
            finally:
                generator.close()
    report = Results("eval_backends", "Evaluation speed — bench/eval_backends.py")
    print(
        report.note(
            f"{len(prompts)} KorQuAD evaluation questions, {prompt_tokens:,} prompt tokens, greedy, up to "
            f"{MAX_NEW} new tokens; machine bf16 matmul peak: {peak / 1e9:.0f} GFLOP/s (the best of a "
            f"2048 x 2048 matmul, {square / 1e9:.0f}, and the model's own projection matmuls below)"
        )
    )
    print(report.table(["backend", "questions/s", "seconds", "model GFLOP/s", "of bf16 matmul peak"], rows))
    print(
        report.note(
            "The model's own projection matmuls (one layer's q, k, v, o, gate, up, down, bf16) alone: "
            + ", ".join(
                f"{rate / 1e9:.0f} GFLOP/s ({rate / peak:.0%} of the peak) on {n} tokens"
                for n, rate in own_shapes.items()
            )
        )
    )
    print(
        report.note(
            f"{len({r.context for r in questions})} passages for {len(questions)} questions: with prefix "
            "caching vLLM reuses a passage's KV blocks for its later questions, so the model FLOP/s of "
            "those rows count work it did not do (the useful rate for a user); the rows with caching off "
            "are what the hardware computed."
        )
    )
    vllm_rows = [r for r in rows if r[0].startswith("vLLM")]
    computed = [r for r in vllm_rows if "caching off" in r[0] and VLLM_CPU_DEFAULTS not in r[0]]
    if computed:
        best = max(computed, key=lambda r: float(r[1]))
        print(
            report.note(
                f"Best rate the hardware computed (prefix caching off, koqa's settings): {best[4]} of the "
                f"bf16 matmul peak, {best[0].split(' (')[0]}."
            )
        )
    if vllm_rows:
        fastest = max(vllm_rows, key=lambda r: float(r[1]))
        print(
            report.note(f"Fastest vLLM / best transformers throughput: {float(fastest[1]) / float(best_hf[1]):.2f}x.")
        )

    pairs = [
        ("vllm", f"hf-{best_bs}", "vLLM vs transformers, bf16"),
        ("hf-1", f"hf-{best_bs}", f"transformers batch 1 vs batch {best_bs}, bf16 (control)"),
        ("vllm-fp32", "hf-fp32", "vLLM vs transformers, float32"),
    ]
    agreement = []
    for a, b, label in pairs:
        if a in answers and b in answers:
            same = sum(x.strip() == y.strip() for x, y in zip(answers[a], answers[b]))
            first = [
                common_prefix_tokens(tokenizer, x, y) for x, y in zip(answers[a], answers[b]) if x.strip() != y.strip()
            ]
            agreement.append(
                [
                    label,
                    f"{same}/{len(prompts)} ({same / len(prompts):.0%})",
                    f"{sum(first) / len(first):.1f}" if first else "-",
                    f"{f1_on(answers[a]):.4f} / {f1_on(answers[b]):.4f}",
                ]
            )
    if agreement:
        print(
            "\n"
            + report.table(
                [
                    "greedy answers compared",
                    "identical",
                    "tokens shared before they part",
                    "leaderboard F1 (first / second)",
                ],
                agreement,
            )
        )

    if args.full_eval:
        from koqa.eval.eval_config import EvalConfig
        from koqa.eval.evaluate import evaluate

        out_dir = Path(tempfile.mkdtemp(prefix="koqa-zero-shot-"))
        quality = []
        for span in ("off", "snap"):
            started = time.perf_counter()
            config = EvalConfig(data=str(KORQUAD), out=str(out_dir), korquad_split="eval", span=span)
            m = evaluate(config)["metrics"]
            quality.append(
                [
                    f"zero-shot, span {span}",
                    m["n"],
                    f"{m['f1']:.4f}",
                    f"{m['exact_match']:.4f}",
                    f"{time.perf_counter() - started:.0f}",
                ]
            )
        print("\n" + report.table(["default model", "questions", "leaderboard F1", "EM", "seconds"], quality))
    report.write(peak)


if __name__ == "__main__":
    main()
