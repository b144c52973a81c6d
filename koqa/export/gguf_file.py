"""A transformers causal LM written as GGUF, the way llama.cpp's own converter (convert_hf_to_gguf.py)
writes it: tensor names from gguf-py's name map, the metadata keys llama.cpp reads for each family,
the per-family weight layouts (Llama's rotary row order, Gemma's norm offset), the tokenizer as
llama.cpp's vocabulary, and every 2-D weight quantised with gguf-py's reference quantisers.

Families: Gemma 3 (`gemma3`), Llama and Mistral (both `llama` in llama.cpp) and Qwen2 (`qwen2`).
Another family is refused by name rather than written wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from koqa.errors import KoqaError

log = logging.getLogger(__name__)

# transformers' model_type -> llama.cpp's architecture name
ARCHITECTURES = {"gemma3_text": "gemma3", "llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
# --quant -> (the tensor type of 2-D weights, llama.cpp's file type)
QUANTS = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
KOQA_KEYS = "koqa."  # the prompt template and lengths, under koqa.* keys a runtime can read


def architecture_of(config) -> str:
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        raise KoqaError(
            f"GGUF export knows the {', '.join(sorted(ARCHITECTURES))} model types; this model is "
            f"'{config.model_type}'",
            field="format",
            fix="use --format hf (a merged safetensors folder)",
        )
    if arch == "gemma3":
        standard = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(config.num_hidden_layers)]
        if list(config.layer_types) != standard:
            raise KoqaError(
                "this Gemma 3 model's sliding and full attention layers are not Gemma 3's every-sixth pattern, "
                "which llama.cpp (and GGUF) assume",
                field="format",
                fix="use --format hf",
            )
    return arch


def _permute(weights: np.ndarray, n_head: int, n_kv: int | None = None) -> np.ndarray:
    """llama.cpp's row order of a Llama q/k projection (rotary halves interleaved), as its converter."""
    if n_kv is not None and n_head != n_kv:
        n_head = n_kv
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _layout(arch: str, name: str, weights: np.ndarray, config) -> np.ndarray:
    if arch == "llama" and name.endswith("q_proj.weight"):
        return _permute(weights, config.num_attention_heads, config.num_attention_heads)
    if arch == "llama" and name.endswith("k_proj.weight"):
        return _permute(weights, config.num_attention_heads, config.num_key_value_heads)
    if arch == "gemma3" and name.endswith("norm.weight"):
        return weights + 1  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by w
    return weights


def _hyperparameters(writer, arch: str, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in rope:  # Gemma 3: one rotary base per attention kind
        rope = rope["full_attention"]
    theta = rope.get("rope_theta") or getattr(config, "rope_theta", None)
    if theta:
        writer.add_rope_freq_base(float(theta))
    if arch == "gemma3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(config.sliding_window)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(config.vocab_size)


def _vocabulary(writer, arch: str, tokenizer_dir: Path) -> None:
    """The tokenizer as llama.cpp reads it: SentencePiece-style vocabularies (byte fallback: Gemma,
    Llama 2, Mistral) as `llama`, byte-level BPE (Llama 3, Qwen2) as `gpt2` with its merges."""
    import json

    from gguf.vocab import LlamaHfVocab, SpecialVocab

    model = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    if model.get("type") != "BPE":
        raise KoqaError(f"GGUF export writes BPE tokenizers; this one is {model.get('type')}", field="format")
    if model.get("byte_fallback"):
        vocab = LlamaHfVocab(tokenizer_dir)
        tokens, scores, types = zip(*vocab.all_tokens())
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(list(tokens))
        writer.add_token_scores(list(scores))
        writer.add_token_types([int(t) for t in types])
        if arch == "gemma3":
            writer.add_add_space_prefix(False)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        vocab = tokenizer.get_vocab()
        added = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
        ordered = sorted(vocab.items(), key=lambda item: item[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise KoqaError("the tokenizer's ids are not contiguous from 0", field="format")
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2" if arch == "qwen2" else "llama-bpe")
        writer.add_token_list([t for t, _ in ordered])
        writer.add_token_types([3 if added.get(t) else 4 if t in added else 1 for t, _ in ordered])
    # SentencePiece-style vocabularies are merged by score in llama.cpp: no merges, as its converter
    special = SpecialVocab(tokenizer_dir, load_merges=not model.get("byte_fallback"))
    special.add_to_gguf(writer, quiet=True)


def _tensor(writer, name: str, weights: np.ndarray, qtype) -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if weights.ndim == 1 or qtype == GGMLQuantizationType.F32:
        writer.add_tensor(name, weights.astype(np.float32))
        return
    if qtype == GGMLQuantizationType.F16:
        writer.add_tensor(name, weights.astype(np.float16))
        return
    block = {GGMLQuantizationType.BF16: 1}.get(qtype, 32)
    if weights.shape[-1] % block:  # a row the block does not divide: kept at 16 bits, as llama.cpp does
        writer.add_tensor(name, weights.astype(np.float16))
        return
    writer.add_tensor(name, quantize(weights, qtype), raw_dtype=qtype)


def write_gguf(model, tokenizer_dir: Path, path: Path, quant: str, koqa_metadata: dict[str, str | int]) -> dict:
    """Write `model` (a transformers causal LM, merged) with the tokenizer in `tokenizer_dir` to `path`;
    returns what was written (tensor count and types)."""
    import gguf

    config = model.config
    arch = architecture_of(config)
    qname, ftype = QUANTS[quant]
    qtype = gguf.GGMLQuantizationType[qname]
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(Path(str(config._name_or_path)).name or arch)
    writer.add_file_type(int(gguf.LlamaFileType[ftype]))
    _hyperparameters(writer, arch, config)
    _vocabulary(writer, arch, tokenizer_dir)
    for key, value in koqa_metadata.items():
        (writer.add_uint32 if isinstance(value, int) else writer.add_string)(KOQA_KEYS + key, value)

    tied = getattr(config, "tie_word_embeddings", False)
    # the output matrix (the token embeddings where they are tied) at 8 bits at least, as llama.cpp's
    # quantiser keeps it at a higher type than the rest: every answer token is chosen through it
    output = "model.embed_tokens.weight" if tied else "lm_head.weight"
    output_type = qtype if qname in ("F32", "F16", "BF16", "Q8_0") else gguf.GGMLQuantizationType.Q8_0
    written = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reuses the token embeddings
        stem, _, suffix = name.rpartition(".")
        target = names.get_name(stem)
        if target is None:
            raise KoqaError(f"no GGUF name for the tensor '{name}' of a {arch} model", field="format")
        weights = _layout(arch, name, tensor.detach().float().cpu().numpy(), config)
        _tensor(writer, f"{target}.{suffix}", weights, output_type if name == output else qtype)
        written[f"{target}.{suffix}"] = list(weights.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch, "tensors": len(written), "quant": quant}
