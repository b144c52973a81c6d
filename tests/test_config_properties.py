"""Property tests of the settings loader: any file, any --set text, any values for known keys give
either a checked config or a KoqaError, never another exception. Each property runs 200 examples."""

import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koqa.errors import KoqaError
from koqa.eval.eval_config import EvalConfig
from koqa.preprocess import PreprocessConfig
from koqa.settings import coerce, load, parse_set_overrides, read_config_file
from koqa.train.train_config import TrainConfig

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
STAGES = [TrainConfig, EvalConfig, PreprocessConfig]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


def required(stage) -> dict:
    return {"out": "o", "inputs": ["i"]} if stage is PreprocessConfig else {"data": "d", "out": "o"}


def _holds_its_types(config) -> None:
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        assert coerce(value, hints[f.name]) == value  # already of its type: nothing left to coerce
        if isinstance(value, float):
            assert math.isfinite(value)


@EXAMPLES
@given(stage=st.sampled_from(STAGES), data=st.data())
def test_any_values_for_known_keys_give_a_checked_config_or_a_koqa_error(stage, data):
    names = [f.name for f in dataclasses.fields(stage)]
    chosen = data.draw(st.dictionaries(st.sampled_from(names), values, max_size=4))
    try:
        config = load(stage, flags={**required(stage), **chosen})
    except KoqaError:
        return
    _holds_its_types(config)


@EXAMPLES
@given(text=st.text(max_size=60))
def test_any_set_text_parses_or_is_refused(text):
    try:
        parsed = parse_set_overrides([text])
    except KoqaError:
        return
    assert isinstance(parsed, dict) and len(parsed) == 1


@EXAMPLES
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".yaml", ".toml"]))
def test_any_bytes_as_a_config_file_read_or_are_refused(tmp_path, raw, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(raw)
    try:
        data = read_config_file(path)
    except KoqaError:
        return
    assert isinstance(data, dict)


@pytest.mark.parametrize("stage", STAGES)
def test_the_defaults_hold_their_own_types(stage):
    config = load(stage, flags=required(stage))
    _holds_its_types(config)
