"""Greedy generation with vLLM; LoRA adapters are served as LoRA requests."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

from koqa.eval.backends import GenerationParams, cut_at_stop

log = logging.getLogger(__name__)


class VLLMGenerator:
    name = "vllm"

    def __init__(self, model: str, adapter: str | None = None, max_model_len: int = 2048, dtype: str = "auto",
                 seed: int = 0, lora_mode: str = "auto", compile: bool = False, prefix_caching: bool = True,
                 **_unused):
        import torch

        on_cpu = not torch.cuda.is_available()
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if on_cpu:
            # vLLM's CPU backend reserves a fraction of memory for its KV cache; keep it modest.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        if adapter and (lora_mode == "merge" or (lora_mode == "auto" and on_cpu)):
            from koqa.merging import cached_merged_model

            log.info("serving the LoRA adapter merged into the base model (faster than LoRA kernels on CPU)")
            model, adapter = cached_merged_model(adapter, model), None
        from vllm import LLM

        kwargs = dict(model=model, tokenizer=model, max_model_len=max_model_len, seed=seed,
                      dtype="bfloat16" if dtype == "auto" and on_cpu else dtype,
                      enable_prefix_caching=prefix_caching)  # questions on one passage share its KV blocks
        if on_cpu:
            # eager by default: torch.compile on 2 cores costs minutes of start-up per model
            kwargs.update(gpu_memory_utilization=0.5, enforce_eager=not compile)
        self.lora_request = None
        if adapter:
            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))["r"]
            kwargs.update(enable_lora=True, max_lora_rank=max(8, 1 << (int(rank) - 1).bit_length()))
            self.lora_request = LoRARequest("koqa-adapter", 1, str(adapter))
        log.info("starting vLLM engine (%s)", "CPU" if on_cpu else "CUDA")
        self.llm = LLM(**kwargs)

    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sampling = SamplingParams(temperature=0.0, max_tokens=params.max_new_tokens, stop=list(params.stop))
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sampling,
                                    lora_request=self.lora_request, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, params.stop) for o in outputs]

    def close(self) -> None:
        """Stop the engine's worker processes now. Dropping the object leaves them running (and, on a
        CPU, spinning) until the interpreter exits, which slows whatever runs next in this process."""
        self.llm.llm_engine.engine_core.shutdown()

