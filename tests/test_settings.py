"""Settings honoured or refused: a setting that a backend or a schedule would ignore is refused in one
line naming it, and the ones that are taken reach the library as koqa means them."""

import math

import pytest

from koqa.errors import KoqaError
from koqa.eval.eval_config import EvalConfig, backend_problems
from koqa.settings import load
from koqa.time_budget import TIME_SCHEDULES
from koqa.train.train_config import LR_SCHEDULERS, TrainConfig

TRAIN = {"data": "d", "out": "o"}
EVAL = {"data": "d", "out": "o"}

# (setting, value, backend, refused): the eval settings one backend honours and the other would ignore
BACKEND_TABLE = [
    ("batch_size", 4, "vllm", True),
    ("batch_size", 4, "hf", False),
    ("chunk_size", 8, "vllm", True),
    ("chunk_size", 8, "hf", False),
    ("vllm_compile", True, "hf", True),
    ("vllm_compile", True, "vllm", False),
    ("tensor_parallel_size", 2, "hf", True),
    ("tensor_parallel_size", 2, "vllm", False),
    ("pipeline_parallel_size", 2, "hf", True),
    ("pipeline_parallel_size", 2, "vllm", False),
]


@pytest.mark.parametrize(("key", "value", "backend", "refused"), BACKEND_TABLE)
def test_an_explicit_backend_refuses_what_it_would_ignore(key, value, backend, refused, monkeypatch):
    monkeypatch.setattr("koqa.eval.backends.vllm_available", lambda: True)
    flags = {**EVAL, "backend": backend, key: value}
    if not refused:
        assert getattr(load(EvalConfig, flags=flags), key) == value
        return
    with pytest.raises(KoqaError) as info:
        load(EvalConfig, flags=flags)
    assert info.value.field == key and "\n" not in str(info.value)


@pytest.mark.parametrize(("key", "value", "backend", "refused"), BACKEND_TABLE)
def test_auto_refuses_what_the_backend_it_chose_would_ignore(key, value, backend, refused, monkeypatch):
    """`auto` decides when the adapter is known: the refusal comes then, before the backend loads."""
    from koqa.eval import pipeline

    loaded = []
    monkeypatch.setattr(pipeline, "choose_backend", lambda name, peft_type: backend)
    monkeypatch.setattr(pipeline, "load_generator", lambda *a, **kw: loaded.append(kw) or "generator")
    config = load(EvalConfig, flags={**EVAL, key: value})
    assert config.backend == "auto"

    class Prepared:
        adapter, model, adapter_dir, max_length, max_new_tokens = None, "m", None, 64, 8

    if refused:
        with pytest.raises(KoqaError) as info:
            pipeline.open_generator(Prepared(), config)
        assert info.value.field == key and loaded == []
    else:
        assert pipeline.open_generator(Prepared(), config) == "generator"
        if backend == "vllm" and key != "vllm_compile":
            assert loaded[0][key] == value
        if key == "vllm_compile" and backend == "vllm":
            assert loaded[0]["compile"] is True


def test_backend_problems_name_nothing_for_the_defaults():
    config = load(EvalConfig, flags=EVAL)
    assert backend_problems(config, "hf") == [] and backend_problems(config, "vllm") == []


def test_an_ensemble_takes_chunk_size_on_vllm():
    config = load(EvalConfig, flags={**EVAL, "adapter": ["a", "b"], "chunk_size": 8})
    assert backend_problems(config, "vllm") == []


def test_the_learning_rate_schedules_are_transformers_own_and_build_without_arguments():
    import torch
    from transformers import SchedulerType, get_scheduler

    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for name in LR_SCHEDULERS:
        get_scheduler(name, optimizer, num_warmup_steps=2, num_training_steps=10)


def test_an_unknown_schedule_is_refused_before_training():
    with pytest.raises(KoqaError) as info:
        load(TrainConfig, flags={**TRAIN, "lr_scheduler": "bogus"})
    assert info.value.field == "lr_scheduler"


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_a_time_budget_follows_the_schedule_asked_for_or_refuses_it(name):
    flags = {**TRAIN, "lr_scheduler": name, "schedule_over": "minutes", "max_minutes": 5}
    if name not in TIME_SCHEDULES:
        with pytest.raises(KoqaError) as info:
            load(TrainConfig, flags=flags)
        assert info.value.field == "lr_scheduler"
        return
    assert load(TrainConfig, flags=flags).lr_scheduler == name


def test_the_time_schedules_differ_as_their_names_say():
    at = {name: [factor(p, 0.1) for p in (0.05, 0.55, 1.0)] for name, factor in TIME_SCHEDULES.items()}
    assert at["cosine"] == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    assert at["linear"] == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    assert TIME_SCHEDULES["linear"](0.325, 0.1) == pytest.approx(0.75)
    assert TIME_SCHEDULES["cosine"](0.325, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert at["constant_with_warmup"] == pytest.approx([0.5, 1.0, 1.0])
    assert at["constant"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("ratio", [0.0, 0.03, 0.5, 0.99])
def test_warmup_ratio_reaches_transformers_as_that_share_of_the_run(ratio, tmp_path):
    import torch

    from koqa.runs import RunFolder
    from koqa.train.build import RunSetup, training_arguments
    from koqa.train.methods import METHODS

    config = load(TrainConfig, flags={**TRAIN, "warmup_ratio": ratio})
    setup = RunSetup(config, METHODS["lora"], "m", None, torch.float32, RunFolder(tmp_path), 0.0, None, None)
    assert training_arguments(setup).get_warmup_steps(200) == math.ceil(200 * ratio)


def test_a_warmup_of_the_whole_run_is_refused():
    """transformers reads 1 or more as a step count: 1.0 would have been one step."""
    with pytest.raises(KoqaError) as info:
        load(TrainConfig, flags={**TRAIN, "warmup_ratio": 1.0})
    assert info.value.field == "warmup_ratio"


# a value other than the default for each method's own settings
METHOD_VALUES = {
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj"],
    "skip_layers": 1,
    "use_dora": True,
    "loraplus_lr_ratio": 4.0,
    "num_virtual_tokens": 4,
    "prompt_init_text": "질문에 답하세요.",
}


class ThreeLayers:
    """What a method reads of the base model to build its PEFT config: the layer count."""

    class config:  # noqa: N801 - stands in for model.config
        @staticmethod
        def get_text_config():
            return type("TextConfig", (), {"num_hidden_layers": 3})


def test_every_method_setting_is_in_the_table():
    from koqa.train.methods import METHOD_SETTINGS

    assert set(METHOD_VALUES) == set(METHOD_SETTINGS)


@pytest.mark.parametrize("name", sorted(METHOD_VALUES))
@pytest.mark.parametrize("method", ["lora", "qlora", "prefix", "prompt"])
def test_a_method_setting_changes_its_method_or_is_refused_by_the_others(method, name):
    from koqa.train.methods import METHODS

    flags = {**TRAIN, "method": method, name: METHOD_VALUES[name]}
    if name not in METHODS[method].settings:
        with pytest.raises(KoqaError) as info:
            load(TrainConfig, flags=flags)
        assert info.value.field == name and f"not of {method}" in str(info.value) and "\n" not in str(info.value)
        return
    config = load(TrainConfig, flags=flags)
    if name == "loraplus_lr_ratio":  # not in the PEFT config: the trainer's optimizer takes it, and
        assert config.loraplus_lr_ratio == 4.0  # test_train.py::test_dora_loraplus_and_neftune checks its groups
        return
    build = METHODS[method].build_peft_config
    default = build(load(TrainConfig, flags={**TRAIN, "method": method}), ThreeLayers, "m").to_dict()
    changed = build(config, ThreeLayers, "m").to_dict()
    differing = {key for key in changed if changed[key] != default.get(key)}
    assert differing, f"{name}={METHOD_VALUES[name]} changed nothing in the {method} PEFT config"


# settings that act only under another one: (setting, value, what makes it act)
CONDITIONAL = [
    ("max_questions_per_context", 4, {"shared_context": True}),
    ("eval_limit", 10, {"eval_steps": 5}),
    ("eval_backend", "hf", {"eval_steps": 5}),
    ("early_stopping_patience", 2, {"eval_steps": 5}),
    ("validation_batch_size", 4, {"eval_steps": 5}),
    ("validation_batch_size", 4, {"validation_limit": 10}),
]


@pytest.mark.parametrize(("name", "value", "condition"), CONDITIONAL)
def test_a_setting_that_acts_under_another_is_refused_without_it(name, value, condition):
    flags = {**TRAIN, "validation_limit": 0, name: value}
    with pytest.raises(KoqaError) as info:
        load(TrainConfig, flags=flags)
    assert info.value.field == name and "would do nothing here" in str(info.value)
    assert getattr(load(TrainConfig, flags={**flags, **condition}), name) == value


def test_the_shipped_configs_set_nothing_their_method_ignores():
    from pathlib import Path

    import koqa

    configs = [p for p in (Path(koqa.__file__).parent / "configs").glob("*.yaml") if p.name != "demo.yaml"]
    assert len(configs) >= 5
    for path in configs:
        load(TrainConfig, config_file=path, flags=TRAIN)
