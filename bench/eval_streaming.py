"""`koqa eval` end to end against one bare `LLM.generate` call over the same prompts.

    .venv/bin/python bench/eval_streaming.py [--questions N] [--pairs N]

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

Bare and koqa eval runs alternate (`--pairs`, default 2), then the chunked path, then bare again: the
mean of the bare runs is the baseline, their spread the noise of one run on this machine. On a CPU most of
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
    from koqa.eval.eval_config import EvalConfig
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
    if kind == "chunked":  # the earlier path: chunks of 64 questions (the chunk size transformers uses)
        vllm_backend.VLLMGenerator.streams = False
    config = EvalConfig(
        data=str(KORQUAD),
        korquad_split="eval",
        limit=questions,
        out=str(out),
        backend="vllm",
        max_new_tokens=MAX_NEW,
    )
    started = time.perf_counter()
    result = evaluate(config)
    return {"seconds": time.perf_counter() - started, "answers": result["metrics"]["n"], "f1": result["metrics"]["f1"]}


def run_order(pairs: int) -> list[str]:
    """bare and koqa eval alternating, then the chunked path, and bare last: every koqa eval run has
    a bare run on each side."""
    return ["bare", "koqa"] * pairs + ["chunked", "bare"]


def neighbour_ratios(timeline: list[tuple[str, float]]) -> list[float]:
    """Each koqa eval run's seconds over the mean of the nearest bare run before it and after it: the
    machine's speed drifts over a run of the script, and these compare runs minutes apart."""
    ratios = []
    for i, (kind, seconds) in enumerate(timeline):
        if kind != "koqa":
            continue
        before = [s for k, s in timeline[:i] if k == "bare"][-1:]
        after = [s for k, s in timeline[i + 1 :] if k == "bare"][:1]
        ratios.append(seconds / (sum(before + after) / len(before + after)))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1287)
    parser.add_argument(
        "--pairs", type=int, default=2, help="bare/koqa eval pairs (one of each cannot tell the machine's drift apart)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            Path(args.json).write_text(json.dumps(one(args.one, args.questions, Path(tmp) / "eval")))
        return
    measured, timeline = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for n, kind in enumerate(run_order(args.pairs)):
            path = Path(tmp) / f"{n}.json"
            cmd = [sys.executable, __file__, "--one", kind, "--questions", str(args.questions), "--json", str(path)]
            subprocess.run(cmd, check=True)
            measured.setdefault(kind, []).append(json.loads(path.read_text()))
            timeline.append((kind, measured[kind][-1]["seconds"]))
            print(kind, measured[kind][-1], flush=True)
    seconds = {kind: [m["seconds"] for m in runs] for kind, runs in measured.items()}
    mean = {kind: sum(values) / len(values) for kind, values in seconds.items()}
    base = mean["bare"]
    before_stop = sum(m["before_stop"] for m in measured["bare"]) / len(measured["bare"])
    labels = {
        "bare": "bare LLM.generate, one call",
        "koqa": "koqa eval: every question in flight, answers saved as they finish",
        "chunked": "koqa eval: 64-question chunks (earlier path)",
    }
    rows = []
    for kind in ("bare", "koqa", "chunked"):
        f1 = measured[kind][0].get("f1")
        runs = ", ".join(f"{value:.1f}" for value in seconds[kind])
        rows.append(
            [
                labels[kind],
                str(len(seconds[kind])),
                runs,
                f"{mean[kind]:.1f}",
                f"{mean[kind] / base:.3f}",
                f"{f1:.4f}" if f1 is not None else "—",
            ]
        )
    results = Results("eval_streaming", "Streaming evaluation — bench/eval_streaming.py")
    headers = ["run", "runs", "seconds, in run order", "mean s (engine start and stop included)", "vs bare", "F1"]
    print(results.table(headers, rows))
    ratio = mean["koqa"] / base
    local = ", ".join(f"{r:.3f}" for r in neighbour_ratios(timeline))
    spread = (max(seconds["bare"]) - min(seconds["bare"])) / base
    print(
        results.note(
            f"{args.questions:,} KorQuAD evaluation questions, default model, zero-shot, greedy, at most "
            f"{MAX_NEW} new tokens; each run a fresh process, in the order {', '.join(run_order(args.pairs))}. "
            f"The bare runs spread over {spread:.1%} of their mean; they took {before_stop:.1f} s on average "
            f"before the engine's shutdown (koqa eval against that: {mean['koqa'] / before_stop:.3f}x). koqa "
            f"eval within 5% of bare: {'yes' if ratio <= 1.05 else 'NO'} ({ratio:.3f}x); each koqa eval run "
            f"against the bare runs on either side of it: {local}. CPU only: no GPU was reachable, where "
            "chunk tails cost most."
        )
    )
    results.write()


if __name__ == "__main__":
    main()
