from pathlib import Path

import pytest

from koqa.config import load_config, parse_set_overrides
from koqa.errors import KoqaError
from koqa.eval.evaluate import EvalConfig
from koqa.preprocess import PreprocessConfig
from koqa.sft import SFTConfig, load_sft_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "koqa" / "configs").glob("*.yaml"))


def test_defaults_file_and_flags_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_length: 700\nseed: 5\n", encoding="utf-8")
    config = load_config(PreprocessConfig, path, {"seed": 9})
    assert (config.max_length, config.seed, config.split) == (700, 9, "context")


def test_toml_is_read(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "prefix"\nnum_virtual_tokens = 8\n', encoding="utf-8")
    config = load_sft_config(str(path), {})
    assert config.method == "prefix" and config.num_virtual_tokens == 8
    assert config.learning_rate == 1e-2  # the per-method default


def test_unknown_keys_are_reported_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_lenght: 700\nsplitt: none\n", encoding="utf-8")
    with pytest.raises(KoqaError, match="unknown key 'max_lenght'.*unknown key 'splitt'"):
        load_config(PreprocessConfig, path)


@pytest.mark.parametrize("key", ["hf_token", "HUB_TOKEN", "api_key", "wandb_secret"])
def test_secret_like_keys_are_refused(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"{key}: hf_abcdefghijklmnop\n", encoding="utf-8")
    with pytest.raises(KoqaError) as info:
        load_config(SFTConfig, path)
    assert "hf_abcdefghijklmnop" not in str(info.value)
    assert key in str(info.value)


def test_bad_value_names_the_field(tmp_path):
    with pytest.raises(KoqaError, match="field 'batch_size': cannot read 'eight' as int"):
        load_config(SFTConfig, None, {"batch_size": "eight"})


def test_set_overrides_parse_yaml_scalars():
    assert parse_set_overrides(["lora_r=8", "target_modules=[q_proj,v_proj]", "gradient_checkpointing=true"]) == \
        {"lora_r": 8, "target_modules": ["q_proj", "v_proj"], "gradient_checkpointing": True}
    with pytest.raises(KoqaError, match="--set expects key=value"):
        parse_set_overrides(["lora_r"])


def test_unknown_method_is_refused():
    with pytest.raises(KoqaError, match="unknown method 'ia3'"):
        load_sft_config(None, {"method": "ia3"})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_starts_with_its_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# koqa "), "each shipped config opens with the command that runs it"
    kind = first.split()[2]
    cls = {"sft": SFTConfig, "eval": EvalConfig, "preprocess": PreprocessConfig}[kind]
    load_config(cls, path)


def test_at_least_one_config_per_method_ships():
    assert {p.stem for p in CONFIGS} >= {"lora", "qlora", "prefix", "prompt"}


def test_token_shaped_values_are_refused_and_not_echoed():
    with pytest.raises(KoqaError) as info:
        load_config(SFTConfig, None, {"model": "hf_" + "x" * 30})
    assert "x" * 30 not in str(info.value)


def test_plural_token_settings_are_not_secrets():
    assert load_sft_config(None, {"num_virtual_tokens": 4, "max_answer_tokens": 8}).num_virtual_tokens == 4


def test_out_of_range_values_are_refused_together_before_any_work():
    with pytest.raises(KoqaError, match="field 'learning_rate': learning_rate must be positive, got -1.0$"):
        load_sft_config(None, {"learning_rate": -1})
    with pytest.raises(KoqaError) as info:
        load_sft_config(None, {"batch_size": 0, "warmup_ratio": 2, "lora_dropout": 1.0, "max_steps": 0})
    message = str(info.value)
    for part in ("batch_size must be positive, got 0", "warmup_ratio must be between 0 and 1, got 2.0",
                 "lora_dropout must be at least 0 and below 1, got 1.0", "max_steps must be -1 (no limit) or positive, got 0"):
        assert part in message
    # the limits themselves are allowed, and unset options are not checked
    config = load_sft_config(None, {"warmup_ratio": 0, "lora_dropout": 0, "max_steps": -1, "max_minutes": None})
    assert config.warmup_ratio == 0 and config.max_minutes is None


def test_eval_settings_are_checked_before_the_model_loads(tmp_path, dacon_train):
    from koqa.eval.evaluate import run_eval

    with pytest.raises(KoqaError, match="field 'limit': limit must be positive, got 0"):
        run_eval(str(dacon_train), str(tmp_path / "o"), EvalConfig(limit=0))
    assert not (tmp_path / "o").exists()
