"""A 2-layer random Gemma 3 text model with the default model's real tokenizer: fast enough to train
in tests. The tests build it once a session (conftest.py); the wheel check of .ci/run builds it with
the installed koqa:

    python tests/tiny_model.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def build_tiny_model(out: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def as_default_model(home: Path, tiny_dir: Path) -> Path:
    """A KOQA_HOME in which the tiny model stands as the embedded default (a copy with the marker
    `koqa model prepare` writes): a test runs a user's default-model script end to end, fast."""
    import shutil

    from koqa.model_store import DEFAULT_MODEL, write_marker

    target = home / "models" / DEFAULT_MODEL
    shutil.copytree(tiny_dir, target)
    write_marker(target, source="tests/tiny_model.py")
    return home


if __name__ == "__main__":
    from koqa.model_store import prepare_default_model

    print(build_tiny_model(Path(sys.argv[1]), prepare_default_model()))
