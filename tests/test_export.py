"""`koqa export`: GGUF files that an independent reader (transformers' GGUF loader) reads back into the
same model, for each family koqa writes; the prompt template recorded; the check scored with paired
intervals; and refusals that write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from koqa.errors import KoqaError

TEXTS = [
    "한국은행은 기준금리를 연 3.25%로 동결했다.",
    "코스피는 25.31포인트 오른 2,650.12에 마감했다.",
    "김민준 대표",
] * 20


def _koqa(*args):
    return subprocess.run([sys.executable, "-m", "koqa.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory) -> Path:
    """A 400-token byte-level BPE tokenizer (the kind Llama 3 and Qwen2 use), so that reading a file
    back takes a second, not the minute a 262,144-token vocabulary does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXTS, trainer)
    out = tmp_path_factory.mktemp("bpe")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=special[0], bos_token=special[0], pad_token=special[1]
    )
    fast.save_pretrained(out)
    return out


def _tiny(family: str, tokenizer_dir: Path, out: Path):
    import torch
    from transformers import AutoTokenizer, Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config

    from koqa.export.gguf_file import ARCHITECTURES  # noqa: F401  (the families named there)

    torch.manual_seed(0)
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
    )
    config = {
        "llama": lambda: LlamaConfig(**common, head_dim=16, tie_word_embeddings=False),
        "mistral": lambda: MistralConfig(**common, head_dim=16, sliding_window=None, tie_word_embeddings=False),
        "qwen2": lambda: Qwen2Config(**common, tie_word_embeddings=False),
        "gemma3": lambda: Gemma3TextConfig(**common, head_dim=16, sliding_window=64),
    }[family]()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms away from their initial ones, so that an offset or a swap shows
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return model


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma3"])
def test_a_gguf_file_reads_back_into_the_same_model(family, small_tokenizer, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from koqa.export.gguf_file import write_gguf

    model = _tiny(family, small_tokenizer, tmp_path / "hf")
    ids = list(range(3, 40))
    written = write_gguf(
        model, tmp_path / "hf", tmp_path / "m.gguf", "f32", {"prompt_template": "{context}|{question}"}
    )
    assert written["tensors"] == len([k for k in model.state_dict() if k != "lm_head.weight" or family != "gemma3"])
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    torch.testing.assert_close(_logits(back, ids), _logits(model, ids), atol=1e-4, rtol=1e-4)

    write_gguf(model, tmp_path / "hf", tmp_path / "q.gguf", "q8_0", {})
    quantised = _logits(AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q.gguf", dtype=torch.float32), ids)
    exact = _logits(model, ids)
    assert torch.corrcoef(torch.stack([quantised.flatten(), exact.flatten()]))[0, 1] > 0.99
    assert not torch.equal(quantised, exact)


def test_the_file_holds_the_vocabulary_template_and_the_tensor_types(small_tokenizer, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    from koqa.export.gguf_file import write_gguf

    model = _tiny("qwen2", small_tokenizer, tmp_path / "hf")
    template = "다음 글을 읽고 답하세요.\n{context}\n질문: {question}\n답:"
    write_gguf(model, tmp_path / "hf", tmp_path / "m.gguf", "q4_0", {"prompt_template": template, "max_length": 512})
    reader = gguf.GGUFReader(tmp_path / "m.gguf")

    def value(key):
        return reader.fields[key].contents()

    assert value("general.architecture") == "qwen2" and value("tokenizer.ggml.model") == "gpt2"
    assert value("koqa.prompt_template") == template and value("koqa.max_length") == 512
    tokenizer = AutoTokenizer.from_pretrained(small_tokenizer)
    assert value("tokenizer.ggml.tokens") == [tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))]
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    merges = json.loads((small_tokenizer / "tokenizer.json").read_text())["model"]["merges"]
    assert [m.split(" ") for m in value("tokenizer.ggml.merges")] == [list(m) for m in merges]
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["token_embd.weight"] == "Q4_0"
    assert types["output.weight"] == "Q8_0"  # the output matrix at 8 bits, as llama.cpp keeps it higher
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.bias"] == "F32"


def test_a_family_gguf_cannot_hold_is_refused_by_name(small_tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from koqa.export.gguf_file import write_gguf

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=400))
    with pytest.raises(KoqaError, match="'gpt2'.*--format hf"):
        write_gguf(model, small_tokenizer, tmp_path / "m.gguf", "q8_0", {})
    assert not (tmp_path / "m.gguf").exists()


@pytest.fixture
def small_gemma(tiny_model_dir, small_tokenizer, tmp_path) -> Path:
    """A Gemma 3 of the tiny model's shapes (so the tiny run's LoRA fits it) with Gemma 3's layer
    pattern, which GGUF assumes, and the small vocabulary (read back in seconds)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    tokenizer = AutoTokenizer.from_pretrained(small_tokenizer)
    config.vocab_size, config.pad_token_id, config.eos_token_id = (
        len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
    )
    config.bos_token_id = None
    torch.manual_seed(0)
    folder = tmp_path / "small-gemma"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_export_of_a_run_writes_the_file_modelfile_and_a_scored_check(tiny_run, small_gemma, dacon_train, tmp_path):
    out = tmp_path / "exported"
    args = ["export", "--adapter", str(tiny_run), "--model", str(small_gemma), "--out", str(out)]
    result = _koqa(*args, "--quant", "q8_0", "--check", str(dacon_train), "--backend", "hf")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "check on 6 questions: F1" in result.stdout
    done = json.loads((out / "koqa_export.json").read_text())
    assert done["file"] == "model-q8_0.gguf" and done["bytes"] == (out / "model-q8_0.gguf").stat().st_size
    assert done["adapter"].startswith(str(tiny_run)) and done["check"]["questions"] == 6
    assert (out / "template.txt").read_text() == (tiny_run / "template.txt").read_text()
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in modelfile and "{{ .System }}" in modelfile and "{{ .Prompt }}" in modelfile
    compare = json.loads((out / "check" / "compare" / "compare.json").read_text())
    assert compare["n"] == 6 and "delta_f1_ci95" in compare["runs"][0]
    exported = json.loads((out / "check" / "exported" / "metrics.json").read_text())
    assert exported["f1"] == pytest.approx(done["check"]["f1"])

    again = _koqa(*args, "--quant", "bf16")  # its own earlier output is replaced, whole
    assert again.returncode == 0, again.stderr[-2000:]
    names = ["Modelfile", "koqa_export.json", "model-bf16.gguf", "template.txt"]
    assert sorted(p.name for p in out.iterdir()) == names


def test_the_default_vocabulary_is_rebuilt_from_the_file_as_it_was(tiny_model_dir, tmp_path):
    """Gemma's SentencePiece-style vocabulary (262,144 tokens, byte fallback) read back by transformers
    from the file alone tokenizes as the original does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from koqa.export.gguf_file import write_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.layer_types = ["sliding_attention"] * model.config.num_hidden_layers  # GGUF's Gemma 3 pattern
    write_gguf(model, tiny_model_dir, tmp_path / "m.gguf", "q4_0", {})
    rebuilt, original = (
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf"),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    texts = [*TEXTS[:3], "  두 칸  띄어쓰기\n줄바꿈\t탭 English 123 😀", "<bos>특수<eos> 토큰"]
    assert [rebuilt(t).input_ids for t in texts] == [original(t).input_ids for t in texts]
    assert rebuilt.eos_token_id == original.eos_token_id and rebuilt.pad_token_id == original.pad_token_id


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--format", "hf", "--quant", "q4_0"], "quant"),
        (["--limit", "5"], "limit"),
        (["--set", "quant=q3_k"], "quant"),
        (["--set", "format=onnx"], "format"),
        (["--set", "limit=0", "--check", "x.csv"], "limit"),
    ],
)
def test_bad_export_settings_are_one_line_errors(extra, field, tmp_path):
    result = _koqa("export", "--out", str(tmp_path / "o"), *extra)
    assert result.returncode == 2 and field in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_export_refuses_outputs_it_did_not_write_and_writes_nothing_on_failure(tiny_run, tiny_model_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for out, why in [(mine, "not a folder koqa export wrote"), (tiny_run / "x", "lies inside"), (tiny_run, "is")]:
        result = _koqa("export", "--adapter", str(tiny_run), "--out", str(out))
        assert result.returncode == 2 and why in result.stderr, result.stderr
    assert (mine / "notes.txt").read_text() == "keep"
    # the tiny model's own layer pattern (sliding, full) is not Gemma 3's: refused, nothing left behind
    result = _koqa("export", "--adapter", str(tiny_run), "--model", str(tiny_model_dir), "--out", str(tmp_path / "n"))
    assert result.returncode == 2 and "every-sixth pattern" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
