"""Merging a LoRA adapter into its base model: for `koqa merge`, and for serving with vLLM.

vLLM's LoRA path on CPU runs its adapter kernels far slower than a plain model (docs/benchmarks.md),
so the vLLM backend on CPU serves a merged copy, cached under ``$KOQA_HOME/merged/<adapter digest>``
and built once per adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from koqa.atomic import atomic_folder, write_json
from koqa.errors import KoqaError
from koqa.outputs import check_out, own_output
from koqa.runs import CHECKPOINTS, Adapter, adapter_digest, is_lora, locate_adapter
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


def merged_model(adapter: Adapter | None, base_path: str, dtype):
    """The base model at `dtype` with `adapter`'s LoRA weights folded in (the base alone without an
    adapter); an adapter of another kind is refused before anything loads."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if adapter is not None and not is_lora(adapter.peft_type):
        method = adapter.info.method if adapter.info else adapter.peft_type
        raise KoqaError(f"only LoRA adapters can be merged; this run used {method}", file=adapter.dir)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    return model if adapter is None else PeftModel.from_pretrained(model, adapter.dir).merge_and_unload()


def merge(config: MergeConfig) -> str:
    """Merge a LoRA adapter into its base model and save a plain HF folder (written beside, then renamed)."""
    import torch
    from transformers import AutoTokenizer

    from koqa.model_store import resolve_model

    check_out(config.out, [("--adapter", config.adapter), ("--model", config.model)], command="merge")
    out = own_output(config.out, MERGED_MARKER, "a model koqa merge wrote", "merge")
    adapter = locate_adapter(config.adapter, config.checkpoint)
    base_path = resolve_model(config.model or (adapter.info.model if adapter.info else None))
    merged = merged_model(adapter, base_path, torch.bfloat16)
    with atomic_folder(out) as work:
        merged.save_pretrained(work, safe_serialization=True)
        AutoTokenizer.from_pretrained(base_path).save_pretrained(work)
        write_json(work / MERGED_MARKER, {"adapter": adapter.dir, "base_model": base_path})
    return str(out)


def cached_merged_model(adapter_dir: str, base_model: str) -> str:
    from koqa.model_store import koqa_home

    target = koqa_home() / "merged" / adapter_digest(adapter_dir, base_model)
    if not (target / "config.json").is_file():
        merge(MergeConfig(adapter=adapter_dir, out=str(target), model=base_model))
    return str(target)
