"""Device and dtype choices shared by training and generation."""

from __future__ import annotations

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}
DTYPES = ("auto", *_DTYPES)
DTYPE_NAMES = _DTYPES  # every accepted name -> torch's (and vLLM's) name for it


def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str = "auto", device: str | None = None):
    import torch

    if name != "auto":
        return getattr(torch, _DTYPES[name])
    device = device or pick_device()
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32
