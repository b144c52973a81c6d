"""Merging a LoRA adapter into its base model: for `koqa merge`, and for serving with vLLM.

vLLM's LoRA path on CPU runs its adapter kernels far slower than a plain model (0.74 against
6.4 questions/s measured on the demo data), so the vLLM backend on CPU serves a merged copy,
cached under ``$KOQA_HOME/merged/<adapter digest>`` and built once per adapter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from koqa.errors import KoqaError


def merge_adapter(adapter: str, out_dir: str, model: str | None = None) -> str:
    """Merge a LoRA adapter into its base model and save a plain HF folder (written beside, then renamed)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from koqa.eval.evaluate import resolve_adapter
    from koqa.model_store import resolve_model

    adapter_dir, info = resolve_adapter(adapter)
    if info.get("method") not in (None, "lora", "qlora"):
        raise KoqaError(f"only LoRA adapters can be merged; this run used {info.get('method')}", file=adapter)
    base_path = resolve_model(model or info.get("model"))
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def adapter_digest(adapter_dir: str, base_model: str) -> str:
    digest = hashlib.sha256(str(Path(base_model).resolve()).encode())
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with open(Path(adapter_dir) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def cached_merged_model(adapter_dir: str, base_model: str) -> str:
    from koqa.model_store import koqa_home

    target = koqa_home() / "merged" / adapter_digest(adapter_dir, base_model)
    if not (target / "config.json").is_file():
        merge_adapter(adapter_dir, str(target), model=base_model)
    return str(target)
