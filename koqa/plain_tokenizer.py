"""A model's tokenizer.json through the `tokenizers` library alone, for rendering and counting prompts.

`koqa preprocess` counts tokens with the model's tokenizer and `koqa eval` renders prompts with it.
Loading it through transformers imports transformers (and, through AutoTokenizer, torch) and copies
the parsed tokenizer once more; for a small file that is most of preprocess's time. Where the
tokenizer class is the tokenizer.json as it is (`PLAIN_TOKENIZERS`, e.g. the default Gemma 3) and no
chat template is asked for, this class answers the few calls the prompt renderer and the counts make,
with the same ids and offsets; any other tokenizer is loaded through AutoTokenizer as everywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

# tokenizer classes that add nothing to their tokenizer.json for text encoded without special tokens
PLAIN_TOKENIZERS = ("GemmaTokenizer", "GemmaTokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend")


class Encoding(dict):
    """What a transformers tokenizer returns, as far as koqa reads it: ["input_ids"] and .input_ids."""

    @property
    def input_ids(self):
        return self["input_ids"]


class PlainTokenizer:
    chat_template = None  # chat templates go through transformers

    def __init__(self, model_path: str | Path):
        from tokenizers import Tokenizer

        folder = Path(model_path)
        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.bos_token_id = self._special_id(config.get("bos_token"))
        self.eos_token_id = self._special_id(config.get("eos_token"))
        self.pad_token_id = self._special_id(config.get("pad_token"))
        self._encode_batch_ids = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)

    def _special_id(self, token) -> int | None:
        if isinstance(token, dict):
            token = token.get("content")
        return self.backend.token_to_id(token) if isinstance(token, str) else None

    def __call__(self, text, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> Encoding:
        if isinstance(text, str):
            encoded = self.backend.encode(text, add_special_tokens=add_special_tokens)
            out = Encoding(input_ids=encoded.ids)
            if return_offsets_mapping:
                out["offset_mapping"] = encoded.offsets
            return out
        # without offsets, the batch encoder that skips them (tokenizers >= 0.20) gives the same ids
        encode = self.backend.encode_batch if return_offsets_mapping else self._encode_batch_ids
        batch = encode(list(text), add_special_tokens=add_special_tokens)
        out = Encoding(input_ids=[e.ids for e in batch])
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in batch]
        return out


def prompt_tokenizer(model_path: str, chat: bool = False):
    """The tokenizer that renders and counts prompts: a PlainTokenizer where that gives the same ids,
    else the model's own through AutoTokenizer."""
    folder = Path(model_path)
    config_file, tokenizer_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if not chat and config_file.is_file() and tokenizer_file.is_file():
        name = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if name in PLAIN_TOKENIZERS:
            return PlainTokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)
