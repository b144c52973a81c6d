"""Merging a LoRA adapter into its base model: for `koqa merge`, and for serving with vLLM.

vLLM's LoRA path on CPU runs its adapter kernels far slower than a plain model (docs/benchmarks.md),
so the vLLM backend on CPU serves a merged copy, cached under ``$KOQA_HOME/merged/<adapter digest>``
and built once per adapter.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from koqa.atomic import write_json
from koqa.errors import KoqaError
from koqa.outputs import check_out
from koqa.runs import CHECKPOINTS, adapter_digest, is_lora, locate_adapter
from koqa.settings import setting

MERGED_MARKER = "koqa_merged.json"  # in every folder koqa merge writes: the one kind of --out it replaces


@dataclass
class MergeConfig:
    adapter: str | None = setting(help="a `koqa sft` run folder or adapter folder", required=True)
    out: str | None = setting(help="merged model folder", required=True)
    checkpoint: str = setting(
        "best", help="of a run trained with eval_steps: the best adapter, or the final one", choices=CHECKPOINTS
    )
    model: str | None = setting(help="the base model (default: the run's)")


def merge(config: MergeConfig) -> str:
    """Merge a LoRA adapter into its base model and save a plain HF folder (written beside, then renamed)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from koqa.model_store import resolve_model

    check_out(config.out, [("--adapter", config.adapter), ("--model", config.model)], command="merge")
    out = Path(config.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / MERGED_MARKER).is_file():
        raise KoqaError(
            "--out exists and is not a model koqa merge wrote: koqa merge replaces only its own output",
            file=str(out),
            field="out",
            fix="choose a new folder, or remove this one yourself",
        )
    adapter = locate_adapter(config.adapter, config.checkpoint)
    if not is_lora(adapter.peft_type):
        method = adapter.info.method if adapter.info else adapter.peft_type
        raise KoqaError(f"only LoRA adapters can be merged; this run used {method}", file=config.adapter)
    base_path = resolve_model(config.model or (adapter.info.model if adapter.info else None))
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, adapter.dir).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
        write_json(tmp / MERGED_MARKER, {"adapter": adapter.dir, "base_model": base_path})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def cached_merged_model(adapter_dir: str, base_model: str) -> str:
    from koqa.model_store import koqa_home

    target = koqa_home() / "merged" / adapter_digest(adapter_dir, base_model)
    if not (target / "config.json").is_file():
        merge(MergeConfig(adapter=adapter_dir, out=str(target), model=base_model))
    return str(target)
