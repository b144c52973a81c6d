"""`koqa eval` end to end against one bare `LLM.generate` call over the same prompts.

    .venv/bin/python bench/eval_streaming.py [--questions N]

All 1,287 KorQuAD evaluation questions (distinct questions on real passages), the default model,
zero-shot, greedy, the vLLM backend. Each row runs in a fresh process and its clock includes the
engine start and the engine stop (vLLM's shutdown, which a bare script also waits for when it exits;
on a CPU it ends by killing the engine after its 5 s grace period):

- bare: the prompts rendered beforehand (with the tokenizer koqa eval renders with, which imports
  neither torch nor transformers: both rows import those and vLLM inside their clocks), then an
  engine with koqa's settings (`VLLMGenerator`), one `LLM.generate` over all of them, and the
  engine's shutdown: the floor. Its time without the shutdown is printed too.
- koqa eval: the whole command (read, render, engine start, every question in flight with each
  step's answers appended to the log, scores, report).
- koqa eval, 64-question chunks: the same with the earlier path (generate a chunk, save it, next).

Run bare first and last: the mean of the two is the baseline, their spread the noise. On a CPU most of
a chunk's tail is hidden by the engine's small batches; the chunked path costs most on a GPU, where
hundreds of sequences are in flight.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, Results, korquad_split  # noqa: E402

MAX_NEW = 32


def one(kind: str, questions: int, out: Path) -> dict:
    """One measurement, in this process."""
    import koqa.eval.vllm_backend as vllm_backend
    from koqa.eval.config import EvalConfig
    from koqa.eval.evaluate import evaluate

    if kind == "bare":
        from koqa.eval.backends import GenerationParams
        from koqa.eval.pipeline import DEFAULT_MAX_LENGTH
        from koqa.model_store import resolve_model
        from koqa.plain_tokenizer import prompt_tokenizer
        from koqa.prompting import DEFAULT_TEMPLATE, PromptRenderer, PromptTemplate

        model = resolve_model(None)
        # the tokenizer koqa eval renders with (tokenizers alone): torch, transformers and vLLM are
        # then imported inside both clocks, by the engine
        template = PromptTemplate.load(DEFAULT_TEMPLATE)
        renderer = PromptRenderer(prompt_tokenizer(model, chat=template.chat), template, max_answer_tokens=MAX_NEW)
        assert "torch" not in sys.modules, "the bare row must import torch inside its clock, as koqa eval does"
        records = korquad_split()[1][:questions]
        prompts = [renderer.render(r.context, r.question).ids for r in records]
        started = time.perf_counter()
        generator = vllm_backend.VLLMGenerator(model, max_model_len=DEFAULT_MAX_LENGTH + MAX_NEW)
        requests, sampling = generator._requests(prompts, GenerationParams(max_new_tokens=MAX_NEW))
        outputs = generator.llm.generate(requests, sampling, use_tqdm=False)
        generated = time.perf_counter() - started
        generator.close()
        return {"seconds": time.perf_counter() - started, "before_stop": generated, "answers": len(outputs)}
    if kind == "chunked":
        del vllm_backend.VLLMGenerator.generate_stream  # the earlier path: chunks of chunk_size
    config = EvalConfig(
        data=str(KORQUAD),
        korquad_split="eval",
        limit=questions,
        out=str(out),
        backend="vllm",
        max_new_tokens=MAX_NEW,
        chunk_size=64,
    )
    started = time.perf_counter()
    result = evaluate(config)
    return {"seconds": time.perf_counter() - started, "answers": result["metrics"]["n"], "f1": result["metrics"]["f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1287)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            Path(args.json).write_text(json.dumps(one(args.one, args.questions, Path(tmp) / "eval")))
        return
    measured = {}
    order = ["bare", "koqa", "chunked", "bare"]
    with tempfile.TemporaryDirectory() as tmp:
        for n, kind in enumerate(order):
            path = Path(tmp) / f"{n}.json"
            cmd = [sys.executable, __file__, "--one", kind, "--questions", str(args.questions), "--json", str(path)]
            subprocess.run(cmd, check=True)
            measured.setdefault(kind, []).append(json.loads(path.read_text()))
            print(kind, measured[kind][-1], flush=True)
    bare = [m["seconds"] for m in measured["bare"]]
    base = sum(bare) / len(bare)
    before_stop = sum(m["before_stop"] for m in measured["bare"]) / len(bare)
    labels = {
        "bare": "bare LLM.generate, one call (mean of first and last)",
        "koqa": "koqa eval: every question in flight, answers saved as they finish",
        "chunked": "koqa eval: 64-question chunks (earlier path)",
    }
    rows = []
    for kind in ("bare", "koqa", "chunked"):
        seconds = base if kind == "bare" else measured[kind][0]["seconds"]
        f1 = measured[kind][0].get("f1")
        rows.append([labels[kind], f"{seconds:.1f}", f"{seconds / base:.3f}", f"{f1:.4f}" if f1 is not None else "—"])
    results = Results("eval_streaming", "Streaming evaluation — bench/eval_streaming.py")
    print(results.table(["run", "seconds (engine start and stop included)", "vs bare", "leaderboard F1"], rows))
    within = measured["koqa"][0]["seconds"] / base <= 1.05
    print(
        results.note(
            f"{args.questions:,} KorQuAD evaluation questions, default model, zero-shot, greedy, at most "
            f"{MAX_NEW} new tokens; each row a fresh process. The two bare runs took {bare[0]:.1f} and "
            f"{bare[-1]:.1f} s, {before_stop:.1f} s on average before the engine's shutdown (koqa eval "
            f"against that: {measured['koqa'][0]['seconds'] / before_stop:.3f}x). koqa eval within 5% of "
            f"bare: {'yes' if within else 'NO'}. CPU only: no GPU was reachable, where chunk tails cost most."
        )
    )
    results.write()


if __name__ == "__main__":
    main()
