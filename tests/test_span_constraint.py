"""Span-constrained decoding (`--span constrain`): whatever tokens a model picks among the allowed
ones, the answer is a span of the passage; on both backends, through `koqa eval`."""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DACON_ROWS
from koqa.eval.span_constraint import SpanConstraint, token_texts_for

HANGUL_AND_MORE = st.sampled_from(list("한빛전자는매출이억원으로늘었다고밝혔 0123456789,.%()-abAB·「」"))


@pytest.fixture(scope="module")
def texts(default_model_dir):
    return token_texts_for(str(default_model_dir))


def random_walk(passage, texts, seed, steps=12):
    """Pick among the allowed tokens at random (stopping where a stop token is picked); the text made."""
    constraint, rng = SpanConstraint(passage, texts), random.Random(seed)
    for _ in range(steps):
        allowed = constraint.allowed()
        token = rng.choice(allowed)
        if token in texts.stop_ids:
            break
        constraint.advance(token)
    return constraint.generated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(passage=st.text(HANGUL_AND_MORE, min_size=1, max_size=80), seed=st.integers(0, 10**6))
def test_every_allowed_path_is_a_span_of_the_passage(texts, passage, seed):
    answer = random_walk(passage, texts, seed)
    assert answer in passage


def test_a_real_answer_is_reachable_and_its_end_allowed(texts, default_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    passage = DACON_ROWS[0][1]
    constraint = SpanConstraint(passage, texts)
    for token in tokenizer.encode(" 1,200억 원", add_special_tokens=False):
        assert token in constraint.allowed()
        constraint.advance(token)
    assert constraint.generated.strip() == "1,200억 원"
    assert set(texts.stop_ids) <= set(constraint.allowed())  # the answer may end here
    # an answer that leaves the passage is not allowed to go on: "1,200억 원으로" is there, "1,200억 원을" is not
    with_particle = tokenizer.encode("을", add_special_tokens=False)[0]
    assert with_particle not in constraint.allowed()


def test_nothing_generated_yet_allows_no_stop(texts):
    assert not set(texts.stop_ids) & set(SpanConstraint("가나다", texts).allowed())


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_constrained_answers_are_spans_on_both_backends(tmp_path, tiny_model_dir, dacon_train, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.evaluate import evaluate

    out = tmp_path / backend
    config = EvalConfig(
        data=str(dacon_train), out=str(out), model=str(tiny_model_dir), backend=backend, span="constrain"
    )
    config.max_new_tokens = 12
    evaluate(config)
    lines = (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["fingerprint"]["span_constrained"] is True
    answers = {row["id"]: row["prediction"] for row in map(json.loads, lines[1:])}
    contexts = {row[0]: row[1] for row in DACON_ROWS}
    assert answers.keys() == contexts.keys()
    for qid, answer in answers.items():  # the random tiny model would answer anything unconstrained
        assert answer.strip() and answer.strip() in contexts[qid], (qid, answer)
