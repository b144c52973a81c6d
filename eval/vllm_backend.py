"""Greedy generation with vLLM; LoRA adapters are served as LoRA requests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

from koqa.errors import KoqaError
from koqa.eval.backends import GenerationParams, cut_at_stop
from koqa.runtime import DTYPE_NAMES

log = logging.getLogger(__name__)

# vLLM on CPU keeps one core for its scheduler and pins the worker's compute threads to the others. On
# a machine this small that core is a large share of the compute (docs/benchmarks.md, evaluation), so
# up to here every core goes to the worker.
ALL_CORES_TO_WORKER_UP_TO = 4
# Prefill chunks on CPU: smaller than vLLM's CPU default of 4,096, so that a chunk's activations stay in
# cache (bench/eval_backends.py --chunk-sizes; docs/benchmarks.md).
CPU_MAX_NUM_BATCHED_TOKENS = 1536
# Greedy decoding does not sample, but the engine takes a seed; a fixed one keeps runs alike.
ENGINE_SEED = 0


class VLLMGenerator:
    name = "vllm"
    streams = True

    """Generation with a vLLM engine. A LoRA adapter is served merged into the base model on CPU
    (vLLM's LoRA kernels are far slower there) and as a LoRA request on CUDA."""

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        max_model_len: int = 2048,
        dtype: str = "auto",
        compile: bool = False,
        prefix_caching: bool = True,
        max_num_batched_tokens: int | None = None,
        span_constraint: bool = False,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
    ):
        import torch

        on_cpu = not torch.cuda.is_available()
        if on_cpu and (tensor_parallel_size > 1 or pipeline_parallel_size > 1):
            key = "tensor_parallel_size" if tensor_parallel_size > 1 else "pipeline_parallel_size"
            raise KoqaError(
                f"{key} splits a model over GPUs, and this machine has none", field=key, fix="leave it at 1"
            )
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if on_cpu:
            # vLLM's CPU backend reserves a fraction of memory for its KV cache; keep it modest.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            if cores <= ALL_CORES_TO_WORKER_UP_TO:
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # a value the user set wins
            max_num_batched_tokens = max_num_batched_tokens or CPU_MAX_NUM_BATCHED_TOKENS
        if adapter and on_cpu:
            from koqa.merging import cached_merged_model

            log.info("serving the LoRA adapter merged into the base model (faster than LoRA kernels on CPU)")
            model, adapter = cached_merged_model(adapter, model), None
        kwargs = dict(
            model=model,
            tokenizer=model,
            max_model_len=max_model_len,
            seed=ENGINE_SEED,
            dtype="bfloat16" if dtype == "auto" and on_cpu else DTYPE_NAMES.get(dtype, dtype),  # bf16 -> bfloat16
            enable_prefix_caching=prefix_caching,
        )  # questions on one passage share its KV blocks
        if max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max_num_batched_tokens
        if tensor_parallel_size > 1 or pipeline_parallel_size > 1:  # one model over several GPUs
            kwargs.update(tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size)
        if span_constraint:  # loaded by name in the engine's process
            kwargs["logits_processors"] = ["koqa.eval.span_vllm:VLLMSpanLogitsProcessor"]
        if on_cpu:
            # eager by default: torch.compile on 2 cores costs minutes of start-up per model
            kwargs.update(gpu_memory_utilization=0.5, enforce_eager=not compile)
        self.lora_request = None
        self.cached_prompt_tokens = 0  # prompt tokens `score` read from the prefix cache
        self.streamed = 0  # requests generate_stream has made
        if adapter:
            from vllm.lora.request import LoRARequest

            from koqa.runs import lora_rank

            rank = lora_rank(adapter)
            kwargs.update(enable_lora=True, max_lora_rank=max(8, 1 << (rank - 1).bit_length()))
            self.lora_request = LoRARequest("koqa-adapter", 1, str(adapter))
        log.info("starting vLLM engine (%s)", "CPU" if on_cpu else "CUDA")
        from koqa.console import quiet_descriptors

        with quiet_descriptors():  # the engine's processes write to koqa.log from their start
            try:
                self._start(kwargs)
            except ValueError as exc:  # vLLM's checks of the model and settings (pydantic's included)
                raise KoqaError(
                    f"vLLM will not load this model so: {engine_refusal(exc)}",
                    file=str(model),
                    fix="change the setting it names, or pass --backend hf",
                ) from None

    def _start(self, kwargs: dict) -> None:
        from vllm import LLM

        self.llm = LLM(**kwargs)

    @staticmethod
    def _requests(prompts: Sequence[list[int]], params: GenerationParams):
        from vllm.inputs import TokensPrompt

        if params.passages is None:  # one sampling for all
            sampling = _sampling(params, None)
        else:
            sampling = [_sampling(params, passage) for passage in params.passages]
        return [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sampling

    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[str]:
        requests, sampling = self._requests(prompts, params)
        outputs = self.llm.generate(requests, sampling, lora_request=self.lora_request, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, params.stop) for o in outputs]

    def generate_stream(
        self, prompts: Sequence[list[int]], params: GenerationParams
    ) -> Iterator[list[tuple[int, str]]]:
        """Every prompt in flight at once; after each engine step, the answers that step finished, as
        (prompt index, text). What is not finished when the caller stops is aborted."""
        requests, sampling = self._requests(prompts, params)
        sampling = sampling if isinstance(sampling, list) else [sampling] * len(requests)
        engine = self.llm.llm_engine
        index = {}  # koqa's own request ids: the engine reports outputs under the ids it was given
        for i, (request, one) in enumerate(zip(requests, sampling)):
            self.streamed += 1
            index[f"koqa-{self.streamed}"] = i
            engine.add_request(f"koqa-{self.streamed}", request, one, lora_request=self.lora_request)
        try:
            while engine.has_unfinished_requests():
                done = [(index.pop(o.request_id), o.outputs[0].text) for o in engine.step() if o.finished]
                if done:
                    yield [(i, cut_at_stop(text, params.stop)) for i, text in done]
        finally:
            if index:
                engine.abort_request(list(index))

    def score(
        self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], batch_size: int = 16
    ) -> list[float]:
        """Sum of the log-probabilities of each continuation's tokens after its prompt, from vLLM's
        prompt log-probabilities (each given token's own log-probability is always among them).

        vLLM's default for such requests is to recompute the whole prompt and run the LM head over
        every position of it. Here the prefix cache is read instead: the questions on one passage and
        their candidate answers share its KV blocks, and the head runs only on the positions computed
        afresh. The distinct prompts are prefilled first, so that every candidate finds its prompt's
        blocks cached (docs/recipe.md, ensembles). A request whose
        cached prefix reached into its continuation (those positions then have no log-probability) is
        scored again without the cache."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in distinct],
            SamplingParams(temperature=0.0, max_tokens=1, detokenize=False),
            lora_request=self.lora_request,
            use_tqdm=False,
        )

        def run(indices, read_cache):
            sampling = SamplingParams(
                temperature=0.0,
                max_tokens=1,
                prompt_logprobs=0,
                detokenize=False,
                skip_reading_prefix_cache=not read_cache,
            )
            inputs = [TokensPrompt(prompt_token_ids=list(prompts[i]) + list(continuations[i])) for i in indices]
            return self.llm.generate(inputs, sampling, lora_request=self.lora_request, use_tqdm=False)

        scores: list[float | None] = [None] * len(prompts)
        redo = []
        for i, output in enumerate(run(range(len(prompts)), read_cache=True)):
            cached = output.num_cached_tokens or 0
            self.cached_prompt_tokens += cached
            if cached > len(prompts[i]) - 1:  # the row predicting the first answer token was not computed
                redo.append(i)
                continue
            scores[i] = self._continuation_logprob(output, prompts[i], continuations[i])
        if redo:
            for i, output in zip(redo, run(redo, read_cache=False)):
                scores[i] = self._continuation_logprob(output, prompts[i], continuations[i])
        return scores

    @staticmethod
    def _continuation_logprob(output, prompt, continuation) -> float:
        per_token = output.prompt_logprobs  # [None, {token: Logprob} for prompt positions 1...]
        return sum(per_token[len(prompt) + j][token].logprob for j, token in enumerate(continuation))

    def close(self) -> None:
        """Stop the engine's worker processes now. Dropping the object leaves them running (and, on a
        CPU, spinning) until the interpreter exits, which slows whatever runs next in this process."""
        self.llm.llm_engine.engine_core.shutdown()


class AsyncVLLMGenerator(VLLMGenerator):
    """vLLM's async engine (`AsyncLLM`), loaded as `VLLMGenerator` loads its engine; what `koqa serve`
    runs. `answer` takes one prompt at a time from a running event loop and the engine's scheduler
    batches it with every other request in flight; the batch methods are not available on it."""

    streams = False

    def _start(self, kwargs: dict) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs, disable_log_stats=True))

    async def answer(self, prompt: list[int], params: GenerationParams, passage: str | None = None) -> tuple[str, int]:
        """The async engine's answer to one prompt (cut at the first stop string) and the tokens it
        generated. Cancelling the call aborts the request in the engine."""
        from vllm.inputs import TokensPrompt

        request, sampling = TokensPrompt(prompt_token_ids=list(prompt)), _sampling(params, passage)
        self.streamed += 1
        final = None
        async for output in self.engine.generate(
            request, sampling, f"koqa-{self.streamed}", lora_request=self.lora_request
        ):
            final = output
        completion = final.outputs[0]
        return cut_at_stop(completion.text, params.stop), len(completion.token_ids)

    def generate(self, prompts, params):
        raise NotImplementedError("the async engine answers one prompt at a time: use answer()")

    generate_stream = score = generate

    def close(self) -> None:
        self.engine.shutdown()


def _sampling(params: GenerationParams, passage: str | None):
    """Greedy sampling for one prompt; `passage`: the span constraint's passage (None: unconstrained)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    # only finished answers are read: the default (cumulative) kind would make the engine build a
    # partial output for every request in flight at every step, in this process
    sampling = SamplingParams(
        temperature=0.0,
        max_tokens=params.max_new_tokens,
        stop=list(params.stop),
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    if passage is not None:
        from koqa.eval.span_vllm import PASSAGE_KEY

        sampling.extra_args = {PASSAGE_KEY: passage}
    return sampling


def engine_refusal(exc: ValueError) -> str:
    """The reason in a vLLM configuration error, on one line (pydantic wraps it in a report)."""
    text = str(exc)
    for line in text.splitlines():
        if "Value error, " in line:
            return line.split("Value error, ", 1)[1].split(" [type=")[0].strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
