"""Settings: one dataclass per stage, defaults < --config file < --set < flags, every problem at once."""

from pathlib import Path

import pytest

from koqa.cli import COMMANDS, build_parser, settings_from_args
from koqa.demo import DemoConfig
from koqa.errors import KoqaError
from koqa.eval.eval_config import EvalConfig
from koqa.preprocess import PreprocessConfig
from koqa.settings import load, parse_set_overrides
from koqa.train.methods import METHODS
from koqa.train.train_config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "koqa" / "configs").glob("*.yaml"))


def settings(argv):
    args = build_parser().parse_args(argv)
    return settings_from_args(COMMANDS[args.command], args)


def test_defaults_file_and_flags_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_length: 700\nseed: 5\nsplit: none\n", encoding="utf-8")
    config = load(
        PreprocessConfig,
        config_file=path,
        sets=["seed=7", "split=context"],
        flags={"seed": 9, "inputs": ["train.csv"], "out": "o"},
    )
    assert (config.max_length, config.seed, config.split) == (700, 9, "context")


def test_a_flag_not_given_never_overrides_the_file(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("backend: hf\nbatch_size: 4\nspan: snap\n", encoding="utf-8")
    config = settings(["eval", "--config", str(path), "--data", "d.csv", "--out", "o"])
    assert (config.backend, config.batch_size, config.span) == ("hf", 4, "snap")
    config = settings(["eval", "--config", str(path), "--data", "d.csv", "--out", "o", "--span", "off"])
    assert (config.backend, config.batch_size, config.span) == ("hf", 4, "off")


def test_every_setting_is_a_flag_and_every_command_takes_config_and_set(tmp_path):
    config = settings(
        [
            "sft",
            "--data",
            "t.csv",
            "--out",
            "r",
            "--lora-r",
            "8",
            "--target-modules",
            "q_proj,v_proj",
            "--no-group-by-length",
            "--set",
            "lora_alpha=16",
        ]
    )
    assert (config.lora_r, config.lora_alpha, config.group_by_length) == (8, 16, False)
    assert config.target_modules == ["q_proj", "v_proj"]
    for name in COMMANDS:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        flags = {option for action in sub._actions for option in action.option_strings}
        assert {"--config", "--set"} <= flags, name


def test_data_and_out_may_come_from_the_file_and_are_required(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("data: train.csv\nout: runs/x\nmethod: prefix\n", encoding="utf-8")
    config = settings(["sft", "--config", str(path)])
    assert (config.data, config.out, config.method) == ("train.csv", "runs/x", "prefix")
    with pytest.raises(
        KoqaError, match="data is required \\(give --data, or set data: in the --config file\\).*out is required"
    ):
        settings(["sft"])


def test_toml_is_read_and_the_learning_rate_defaults_per_method(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "prefix"\nnum_virtual_tokens = 8\ndata = "x"\nout = "y"\n', encoding="utf-8")
    config = load(TrainConfig, config_file=path)
    assert config.method == "prefix" and config.num_virtual_tokens == 8
    assert config.learning_rate == METHODS["prefix"].learning_rate


def test_unknown_keys_are_reported_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_lenght: 700\nsplitt: none\n", encoding="utf-8")
    with pytest.raises(KoqaError, match="unknown key 'max_lenght'.*unknown key 'splitt'"):
        load(PreprocessConfig, config_file=path)


@pytest.mark.parametrize("key", ["hf_token", "HUB_TOKEN", "api_key", "wandb_secret"])
def test_secret_like_keys_are_refused(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"{key}: hf_abcdefghijklmnop\n", encoding="utf-8")
    with pytest.raises(KoqaError) as info:
        load(TrainConfig, config_file=path)
    assert "hf_abcdefghijklmnop" not in str(info.value)
    assert key in str(info.value)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("batch_size", "eight", "batch_size must be a whole number, got 'eight'"),
        ("lora_r", 16.9, "lora_r must be a whole number, got 16.9"),
        ("batch_size", True, "batch_size must be a whole number, got True"),
        ("learning_rate", float("inf"), "learning_rate must be a finite number, got inf"),
        ("target_modules", {"q_proj": 1}, "target_modules must be a list, not dict"),
        ("use_dora", "maybe", "use_dora must be true or false, got 'maybe'"),
    ],
)
def test_values_are_not_coerced_into_something_else(key, value, words):
    with pytest.raises(KoqaError, match=f"field '{key}': " + words.replace("(", "\\(")):
        load(TrainConfig, flags={"data": "x", "out": "y", key: value})


def test_set_overrides_parse_yaml_scalars_and_sections():
    assert parse_set_overrides(
        ["lora_r=8", "target_modules=[q_proj,v_proj]", "gradient_checkpointing=true", "sft.max_steps=5"]
    ) == {"lora_r": 8, "target_modules": ["q_proj", "v_proj"], "gradient_checkpointing": True, "sft": {"max_steps": 5}}
    with pytest.raises(KoqaError, match="--set expects key=value"):
        parse_set_overrides(["lora_r"])


def test_choices_come_from_their_owners():
    with pytest.raises(KoqaError, match="method must be one of lora, qlora, prefix, prompt, got 'ia3'"):
        load(TrainConfig, flags={"data": "x", "out": "y", "method": "ia3"})
    with pytest.raises(KoqaError, match="answer_normalization must be one of .*got 'stem'"):
        load(EvalConfig, flags={"data": "x", "out": "y", "answer_normalization": "nfc,stem"})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_starts_with_its_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# koqa "), "each shipped config opens with the command that runs it"
    command = COMMANDS[first.split()[2]]
    config = load(
        command.load("settings"),
        config_file=path,
        flags={"data": "x", "out": "y"} if command.settings.endswith("TrainConfig") else None,
    )
    if isinstance(config, DemoConfig):  # each section is a valid config of its stage
        config.stage(PreprocessConfig, "preprocess", inputs=["train.csv"], out="y")
        config.stage(TrainConfig, "sft", data="x", out="y")
        config.stage(EvalConfig, "eval", data="x", out="y")


def test_at_least_one_config_per_method_ships():
    assert {p.stem for p in CONFIGS} >= set(METHODS)


def test_a_demo_section_is_checked_like_its_stage(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("sft:\n  max_stepz: 3\neval:\n  backend: tgi\n", encoding="utf-8")
    with pytest.raises(KoqaError, match="unknown key 'sft.max_stepz'"):
        load(DemoConfig, config_file=path)
    config = settings(["demo", "--set", "sft.max_steps=3", "--set", "eval.max_new_tokens=8", "--max-steps", "5"])
    train = config.stage(TrainConfig, "sft", data="x", out="y")
    assert train.max_steps == 5 and train.max_context_chars == 600  # flag over section over defaults
    assert config.stage(EvalConfig, "eval", data="x", out="y").max_new_tokens == 8


def test_token_shaped_values_are_refused_and_not_echoed():
    with pytest.raises(KoqaError) as info:
        load(TrainConfig, flags={"model": "hf_" + "x" * 30})
    assert "x" * 30 not in str(info.value)


def test_plural_token_settings_are_not_secrets():
    flags = {"data": "x", "out": "y", "method": "prompt", "num_virtual_tokens": 4, "max_answer_tokens": 8}
    assert load(TrainConfig, flags=flags).num_virtual_tokens == 4


def test_out_of_range_values_are_refused_together_before_any_work():
    base = {"data": "x", "out": "y"}
    with pytest.raises(KoqaError, match="field 'learning_rate': learning_rate must be positive, got -1.0$"):
        load(TrainConfig, flags={**base, "learning_rate": -1})
    with pytest.raises(KoqaError) as info:
        load(TrainConfig, flags={**base, "batch_size": 0, "warmup_ratio": 2, "lora_dropout": 1.0, "max_steps": 0})
    message = str(info.value)
    for part in (
        "batch_size must be positive, got 0",
        "warmup_ratio must be at least 0 and below 1, got 2.0",
        "lora_dropout must be at least 0 and below 1, got 1.0",
        "max_steps must be -1 (no limit) or positive, got 0",
    ):
        assert part in message
    # the limits themselves are allowed, and unset options are not checked
    config = load(
        TrainConfig, flags={**base, "warmup_ratio": 0, "lora_dropout": 0, "max_steps": -1, "max_minutes": None}
    )
    assert config.warmup_ratio == 0 and config.max_minutes is None


def test_eval_settings_are_checked_before_the_model_loads(tmp_path, dacon_train):
    from koqa.eval.evaluate import evaluate

    with pytest.raises(KoqaError, match="field 'limit': limit must be positive, got 0"):
        evaluate(EvalConfig(data=str(dacon_train), out=str(tmp_path / "o"), limit=0))
    assert not (tmp_path / "o").exists()


def test_type_range_and_unknown_key_problems_come_in_one_message():
    with pytest.raises(KoqaError) as info:
        settings(["sft", "--data", "x", "--out", "y", "--seed", "-1", "--lora-r", "16.9", "--set", "bogus=1"])
    message = str(info.value)
    for part in (
        "lora_r must be a whole number, got '16.9'",
        "seed must be 0 or more, got -1",
        "unknown key 'bogus'",
        "known keys: answer_only_logits",
    ):
        assert part in message
