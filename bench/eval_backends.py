"""Evaluation speed and zero-shot quality of the default model.

    .venv/bin/python bench/eval_backends.py [--questions 200] [--full-eval]

1. Throughput (questions/s) on the first N KorQuAD evaluation questions: the transformers backend
   at several batch sizes and the vLLM backend, as a ratio; greedy-answer agreement between them;
   achieved model FLOP/s against this machine's measured bf16 matmul FLOP/s.
2. With --full-eval: zero-shot leaderboard F1 / EM on all 1,287 evaluation questions, without and
   with span snapping (the snapping re-uses the same generations).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, bf16_matmul_flops, body_and_head_params, korquad_split, table  # noqa: E402

MAX_NEW = 24


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--full-eval", action="store_true")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from koqa.eval.backends import GenerationParams, load_generator, vllm_available
    from koqa.model_store import prepare_default_model
    from koqa.prompting import PromptRenderer, PromptTemplate

    model = str(prepare_default_model())
    _, evaluation = korquad_split()
    questions = evaluation[: args.questions]
    tokenizer = AutoTokenizer.from_pretrained(model)
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=1024, max_answer_tokens=MAX_NEW)
    prompts = [renderer.render(r.context, r.question).ids for r in questions]
    prompt_tokens = sum(map(len, prompts))
    peak = bf16_matmul_flops()
    body, head = body_and_head_params(model)

    def flops(outputs) -> float:
        generated = sum(len(tokenizer(o, add_special_tokens=False).input_ids) + 1 for o in outputs)
        return 2 * body * (prompt_tokens + generated) + 2 * head * (generated + len(outputs))

    rows, answers = [], {}
    hf = load_generator("hf", model)
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        started = time.perf_counter()
        out = hf.generate(prompts, GenerationParams(max_new_tokens=MAX_NEW, batch_size=bs))
        seconds = time.perf_counter() - started
        answers[f"hf-{bs}"] = out
        rows.append([f"transformers, batch {bs}", f"{len(prompts) / seconds:.2f}", f"{seconds:.0f}",
                     f"{flops(out) / seconds / 1e9:.0f}", f"{flops(out) / seconds / peak:.0%}"])
    del hf
    best_hf = max(rows, key=lambda r: float(r[1]))
    if vllm_available():
        started = time.perf_counter()
        vllm = load_generator("vllm", model, max_model_len=1024 + MAX_NEW)
        startup = time.perf_counter() - started
        started = time.perf_counter()
        out = vllm.generate(prompts, GenerationParams(max_new_tokens=MAX_NEW))
        seconds = time.perf_counter() - started
        answers["vllm"] = out
        rows.append([f"vLLM (engine start {startup:.0f} s, not counted)", f"{len(prompts) / seconds:.2f}",
                     f"{seconds:.0f}", f"{flops(out) / seconds / 1e9:.0f}", f"{flops(out) / seconds / peak:.0%}"])
        hf_best_answers = answers[f"hf-{best_hf[0].split()[-1]}"]
        same = sum(a.strip() == b.strip() for a, b in zip(hf_best_answers, out))
        del vllm
    print(f"\n{len(prompts)} KorQuAD evaluation questions, {prompt_tokens:,} prompt tokens, greedy, up to "
          f"{MAX_NEW} new tokens; machine bf16 matmul: {peak / 1e9:.0f} GFLOP/s\n")
    print(table(["backend", "questions/s", "seconds", "model GFLOP/s", "of bf16 matmul peak"], rows))
    if "vllm" in answers:
        print(f"\nvLLM / best transformers throughput: {float(rows[-1][1]) / float(best_hf[1]):.2f}x")
        print(f"identical greedy answers, vLLM vs transformers (bf16): {same}/{len(prompts)} "
              f"({same / len(prompts):.0%})")

    if args.full_eval:
        from koqa.eval.evaluate import EvalConfig, run_eval

        out_dir = Path(tempfile.mkdtemp(prefix="koqa-zero-shot-"))
        quality = []
        for span in ("off", "snap"):
            started = time.perf_counter()
            m = run_eval(str(KORQUAD), str(out_dir), EvalConfig(korquad_split="eval", span=span))["metrics"]
            quality.append([f"zero-shot, span {span}", m["n"], f"{m['f1']:.4f}", f"{m['exact_match']:.4f}",
                            f"{time.perf_counter() - started:.0f}"])
        print("\n" + table(["default model", "questions", "leaderboard F1", "EM", "seconds"], quality))


if __name__ == "__main__":
    main()
