"""Compiled decoder layers: the training step's norms, activations, residual adds and LoRA branches
fused into a few kernels per layer (regional `torch.compile`).

A profiled step spends more time in small elementwise operators than in the frozen weight matmuls
(docs/benchmarks.md, "Where a training step goes"); compiling each decoder layer fuses them. All
layers of a model share one compiled graph per layer kind, so the compile cost is paid once per
run, not once per layer. Unless `compile_layers` says otherwise it is on where the device's
compiler is there (a C++ compiler on CPU, Triton on CUDA), the method is not quantized
(bitsandbytes' 4-bit matmuls do not trace) and the run is long enough to win back the compile time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil

from koqa.errors import KoqaError

log = logging.getLogger(__name__)


def compiler_missing(device: str) -> str | None:
    """Why torch.compile cannot build kernels for `device` here, or None where it can."""
    if device == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
        return None
    if device == "cpu":
        compiler = os.environ.get("CXX", "g++")
        return None if shutil.which(compiler) else f"no C++ compiler ({compiler}) on PATH"
    return f"koqa compiles layers on cpu and cuda only, not {device}"


def decoder_layers(model) -> list:
    """The repeated blocks of an HF model (its `_no_split_modules` classes), found through any
    PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    return [module for module in base.modules() if type(module).__name__ in names]


# compiling slows the first steps (docs/benchmarks.md, "A training step before and after"): runs
# shorter than these do not win it back, and unset `compile_layers` leaves them uncompiled
MIN_STEPS_TO_COMPILE = 50
MIN_MINUTES_TO_COMPILE = 5.0


def too_short_to_compile(config, examples: int, processes: int = 1) -> str | None:
    """Why the run `config` sets up is too short for compiling to pay, or None."""
    if config.max_steps > 0:
        steps = config.max_steps
    elif config.max_minutes:
        if config.max_minutes < MIN_MINUTES_TO_COMPILE:
            return f"a {config.max_minutes:g}-minute run does not win back the compile time"
        return None
    else:
        per_step = config.batch_size * config.gradient_accumulation_steps * processes
        steps = math.ceil(math.ceil(examples / per_step) * config.epochs)
    if steps < MIN_STEPS_TO_COMPILE:
        return f"{steps} steps do not win back the compile time"
    return None


def compile_layers(model, setting: bool | None, device: str, quantized: bool, too_short: str | None = None) -> bool:
    """Compile the decoder layers of `model` in place as `setting` says. Unset (None): where the
    device's compiler is there, the method is not quantized and the run is not `too_short`; a layer
    that then fails to compile runs eagerly. True where compiled."""
    if setting is False:
        return False
    if setting is None and too_short:
        log.info("decoder layers run uncompiled: %s", too_short)
        return False
    reason = compiler_missing(device)
    if reason is None and quantized:
        reason = "4-bit quantized layers do not compile"
    layers = decoder_layers(model) if reason is None else []
    if reason is None and not layers:
        reason = f"{type(model).__name__} names no decoder layer class (_no_split_modules)"
    if reason is not None:
        if setting:
            raise KoqaError(f"compile_layers: true, but {reason}", field="compile_layers", fix="compile_layers: false")
        log.info("decoder layers run uncompiled: %s", reason)
        return False
    import torch._dynamo

    # one graph per layer kind and shape family; sequence lengths differ from batch to batch
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if setting is None:
        torch._dynamo.config.suppress_errors = True  # unasked for: a failed compile falls back to eager
    for layer in layers:
        layer.compile(dynamic=None)
    log.info("%d decoder layers compiled; the first steps include compiling them", len(layers))
    return True


def training_attention(setting: str | None, device: str) -> str | None:
    """The attention implementation a training run loads the model with: `setting` where given;
    unset, "eager" on CPU, where attention written as two matmuls and a softmax (fused into the
    compiled layers) trains faster than SDPA's CPU kernels (docs/benchmarks.md, "A training step
    before and after"); elsewhere None, the model's own (SDPA's fused kernels on CUDA). Eager
    attention keeps each layer's [heads, sequence, sequence] weights for the backward pass: memory
    that grows with the square of max_length."""
    if setting:
        return setting
    return "eager" if device == "cpu" else None


def uncompiled():
    """A context in which compiled layers run eagerly: generation inside a training run (the F1
    evaluations, the validation) would otherwise compile new graphs for its cached decoding."""
    import torch

    if hasattr(torch.compiler, "set_stance"):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()
