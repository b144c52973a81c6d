"""The training step's speed settings (koqa/train/speed.py): when `compile_layers` compiles, what it
refuses, which attention a CPU run trains with, and that koqa's CPU default step trains to the same
losses as the step before it."""

import json
import logging

import pytest
from test_train import koqa, losses

from conftest import sft_command
from koqa.errors import KoqaError
from koqa.settings import load
from koqa.train import TrainConfig
from koqa.train.speed import (
    MIN_MINUTES_TO_COMPILE,
    MIN_STEPS_TO_COMPILE,
    compile_layers,
    compiler_missing,
    decoder_layers,
    too_short_to_compile,
    training_attention,
)


def config(**flags):
    return load(TrainConfig, flags={"data": "x", "out": "y", **flags})


def test_short_runs_are_too_short_and_long_or_timed_ones_are_not():
    assert too_short_to_compile(config(max_steps=MIN_STEPS_TO_COMPILE - 1), 10_000)
    assert too_short_to_compile(config(max_steps=MIN_STEPS_TO_COMPILE), 10) is None
    # no step limit: the steps of the epochs over the examples count
    per_epoch = MIN_STEPS_TO_COMPILE * 4 - 4  # examples at batch 4: one step short
    assert (
        too_short_to_compile(config(batch_size=4), per_epoch)
        == f"{MIN_STEPS_TO_COMPILE - 1} steps do not win back the compile time"
    )
    assert too_short_to_compile(config(batch_size=4, epochs=2), per_epoch) is None
    assert too_short_to_compile(config(batch_size=2, gradient_accumulation_steps=2), per_epoch, processes=2)
    # a time budget without a step limit: its minutes count
    assert too_short_to_compile(config(max_minutes=MIN_MINUTES_TO_COMPILE / 2), 10**6)
    assert too_short_to_compile(config(max_minutes=MIN_MINUTES_TO_COMPILE), 10) is None


@pytest.fixture(scope="module")
def peft_tiny(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def test_decoder_layers_are_found_through_the_peft_wrapper(peft_tiny):
    layers = decoder_layers(peft_tiny)
    assert [type(layer).__name__ for layer in layers] == ["Gemma3DecoderLayer"] * 2


def test_off_short_quantized_or_without_a_compiler_leaves_layers_eager(peft_tiny, monkeypatch, caplog):
    def compiled():
        return [layer for layer in decoder_layers(peft_tiny) if layer._compiled_call_impl is not None]

    caplog.set_level(logging.INFO, logger="koqa.train.speed")
    assert not compile_layers(peft_tiny, False, "cpu", quantized=False)
    assert not compile_layers(peft_tiny, None, "cpu", quantized=False, too_short="3 steps do not win it back")
    assert not compile_layers(peft_tiny, None, "cpu", quantized=True)
    assert "4-bit quantized layers do not compile" in caplog.text
    monkeypatch.setenv("CXX", "no-such-compiler-koqa")
    assert compiler_missing("cpu") == "no C++ compiler (no-such-compiler-koqa) on PATH"
    assert not compile_layers(peft_tiny, None, "cpu", quantized=False)
    assert "no C++ compiler (no-such-compiler-koqa) on PATH" in caplog.text
    with pytest.raises(KoqaError, match="compile_layers: true, but no C\\+\\+ compiler") as caught:
        compile_layers(peft_tiny, True, "cpu", quantized=False)
    assert caught.value.field == "compile_layers"
    assert compiled() == []


def test_training_attention_is_eager_on_cpu_unless_set():
    assert training_attention(None, "cpu") == "eager"
    assert training_attention(None, "cuda") is None  # the model's own: SDPA's fused kernels
    assert training_attention("sdpa", "cpu") == "sdpa"
    assert training_attention("flash_attention_2", "cuda") == "flash_attention_2"


def test_an_unknown_attention_is_a_one_line_error(tmp_path, tiny_model_dir, dacon_train):
    run = tmp_path / "run"
    args = sft_command(dacon_train, run, tiny_model_dir, steps=1)
    result = koqa([*args, "--set", "attn_implementation=bogus"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "attn_implementation" in result.stderr and "'bogus'" in result.stderr
    assert not (run / "adapter").exists()


def test_the_cpu_default_step_trains_to_the_earlier_steps_losses_and_validates(tmp_path, tiny_model_dir, dacon_train):
    """Three steps of koqa's CPU default (compiled layers, eager attention) and of the step before it
    (uncompiled layers, SDPA attention), no dropout, the same seed, give the same losses to bf16/fp32
    rounding; the compiled run's validation generates with its layers run eagerly."""
    if compiler_missing("cpu"):
        pytest.skip(f"torch.compile cannot build CPU kernels here: {compiler_missing('cpu')}")
    validation = ["--validation", str(dacon_train), "--set", "validation_limit=2", "--set", "validation_batch_size=2"]
    runs = {}
    for name, compiled, sets in (
        ("before", "false", ["--set", "attn_implementation=sdpa"]),
        ("default", "true", validation),
    ):
        out = tmp_path / name
        flags = ["--set", "lora_dropout=0", "--set", f"compile_layers={compiled}", *sets]
        result = koqa(sft_command(dacon_train, out, tiny_model_dir, *flags, steps=3))
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("decoder layers compiled" in result.stderr) == (compiled == "true")
        assert f"attention: {'eager' if compiled == 'true' else 'sdpa'}" in result.stderr
        runs[name] = out
    curves = {name: losses(out) for name, out in runs.items()}
    assert len(curves["before"]) == len(curves["default"]) == 3
    assert curves["default"] == pytest.approx(curves["before"], rel=2e-2)
    metrics = json.loads((runs["default"] / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 2
