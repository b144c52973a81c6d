"""Ensembles of adapters (`koqa eval --adapter A --adapter B`) and the backends' answer scores."""

import csv
import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import DACON_ROWS, write_weights
from koqa.errors import KoqaError
from koqa.eval.ensemble import candidate_answers, choose, evaluate_ensemble
from koqa.eval.eval_config import EvalConfig
from koqa.eval.evaluate import evaluate

GOLD = [r[3] for r in DACON_ROWS]


def run_ensemble_eval(data, out, config, adapters, generators=None):
    """`evaluate_ensemble` of `data` into `out` with `config`'s other settings."""
    return evaluate_ensemble(dataclasses.replace(config, data=data, out=out, adapter=adapters), generators)


class ScriptedMember:
    """Answers from a list in question order; scores each candidate answer from a table."""

    name = "scripted"
    streams = False

    def __init__(self, answers, scores, tokenizer):
        self.answers, self.scores, self.tokenizer = list(answers), scores, tokenizer
        self.generated, self.scored = 0, []

    def generate(self, prompts, params):
        out = self.answers[self.generated : self.generated + len(prompts)]
        self.generated += len(prompts)
        return [a + "\n### 질문" for a in out]

    def score(self, prompts, continuations, batch_size=16):
        assert all(c[-1] == self.tokenizer.eos_token_id for c in continuations)  # the answer, then the end
        texts = [self.tokenizer.decode(c[:-1]) for c in continuations]
        self.scored += texts
        return [self.scores[t] for t in texts]

    def close(self):
        pass


def _adapter(folder, weights: bytes):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    write_weights(folder / "adapter_model.safetensors", weights)
    return str(folder)


def _rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_candidate_with_the_highest_summed_log_probability_wins():
    assert candidate_answers(["서울", "부산", "서울"]) == ["서울", "부산"]
    # member 1 prefers 서울 (-1 against -3), member 2 부산 (-2.5 against -1): -3.5 beats -4
    assert choose(["서울", "부산"], [{"서울": -1.0, "부산": -3.0}, {"서울": -2.5, "부산": -1.0}]) == "서울"
    assert choose(["서울", "부산"], [{"서울": -1.0, "부산": -3.0}, {"서울": -4.0, "부산": -1.0}]) == "부산"
    assert choose(["서울", "부산"], [{"서울": -2.0, "부산": -2.0}]) == "서울"  # a tie keeps the first


def test_ensemble_scores_only_disputed_answers_and_resumes(tmp_path, dacon_train, default_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    first = list(GOLD)
    first[2] = "부산"  # wrong
    second = list(GOLD)
    second[1] = "반도체"  # partial: 반도체 vs 반도체 소재
    second[3] = "누리바이오"  # wrong
    member_1 = ScriptedMember(
        first,
        {GOLD[1]: -1.0, "반도체": -3.0, "부산": -0.5, GOLD[2]: -4.0, GOLD[3]: -2.0, "누리바이오": -1.0},
        tokenizer,
    )
    member_2 = ScriptedMember(
        second,
        {GOLD[1]: -2.5, "반도체": -1.0, "부산": -5.0, GOLD[2]: -0.2, GOLD[3]: -3.0, "누리바이오": -1.0},
        tokenizer,
    )
    adapters = [_adapter(tmp_path / "a", b"first"), _adapter(tmp_path / "b", b"second")]
    out = tmp_path / "ensemble"
    result = run_ensemble_eval(str(dacon_train), str(out), EvalConfig(), adapters, generators=[member_1, member_2])

    predictions = [row["prediction"] for row in _rows(out / "predictions.csv")]
    # Q1: -3.5 against -4; Q2: -4.2 against -5.5; Q3: 누리바이오 -2 against -5, though wrong
    assert predictions == [GOLD[0], GOLD[1], GOLD[2], "누리바이오", GOLD[4], GOLD[5]]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["exact_match"] == pytest.approx(5 / 6)
    assert metrics["agreement"] == 0.5 and metrics["disputed"] == 3
    assert metrics["oracle_f1"] == pytest.approx(1.0)
    assert metrics["scored"] == 2 * 2 * 3  # two members, two candidates, three disputed questions
    assert [m["exact_match"] for m in metrics["members"]] == [pytest.approx(5 / 6), pytest.approx(4 / 6)]
    assert metrics["members"][1]["f1"] == pytest.approx((4 + 0.75) / 6)
    assert result["metrics"]["f1"] == pytest.approx(metrics["f1"])
    for k in (1, 2):  # each member keeps a folder of its own, scored alone
        assert json.loads((out / f"member-{k}" / "metrics.json").read_text(encoding="utf-8"))["n"] == 6
    # only the three disputed questions were scored, each candidate by each member
    assert (
        sorted(member_1.scored)
        == sorted(member_2.scored)
        == sorted([GOLD[1], "반도체", "부산", GOLD[2], GOLD[3], "누리바이오"])
    )

    again = [ScriptedMember([], {}, tokenizer), ScriptedMember([], {}, tokenizer)]
    rerun = run_ensemble_eval(str(dacon_train), str(out), EvalConfig(), adapters, generators=again)
    assert [g.generated for g in again] == [0, 0] and [g.scored for g in again] == [[], []]
    assert rerun["metrics"]["exact_match"] == pytest.approx(5 / 6) and rerun["metrics"]["scored"] == 0

    write_weights(tmp_path / "b" / "adapter_model.safetensors", b"retrained")
    with pytest.raises(KoqaError, match="other settings"):
        run_ensemble_eval(str(dacon_train), str(out), EvalConfig(), adapters, generators=again)


def test_a_single_run_s_answers_copied_into_a_member_folder_are_not_generated_again(
    tmp_path, dacon_train, default_model_dir
):
    import shutil

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    adapters = [_adapter(tmp_path / "a", b"first"), _adapter(tmp_path / "b", b"second")]
    second = list(GOLD)
    second[0] = "부산"
    evaluate(
        EvalConfig(data=str(dacon_train), out=str(tmp_path / "single-a"), adapter=[adapters[0]]),
        generator=ScriptedMember(GOLD, {}, tokenizer),
    )
    out = tmp_path / "ensemble"
    (out / "member-1").mkdir(parents=True)
    shutil.copy(tmp_path / "single-a" / "generations.jsonl", out / "member-1" / "generations.jsonl")
    member_1 = ScriptedMember([], {GOLD[0]: -1.0, "부산": -2.0}, tokenizer)  # has no answers to give
    member_2 = ScriptedMember(second, {GOLD[0]: -1.0, "부산": -0.5}, tokenizer)
    result = run_ensemble_eval(str(dacon_train), str(out), EvalConfig(), adapters, generators=[member_1, member_2])
    assert member_1.generated == 0 and member_2.generated == len(GOLD)
    assert result["metrics"]["members"][0]["exact_match"] == pytest.approx(1.0)
    assert result["metrics"]["disputed"] == 1 and sorted(member_1.scored) == sorted([GOLD[0], "부산"])

    # answers of another adapter are refused, not mixed in
    other = tmp_path / "ensemble-other"
    (other / "member-2").mkdir(parents=True)
    shutil.copy(tmp_path / "single-a" / "generations.jsonl", other / "member-2" / "generations.jsonl")
    with pytest.raises(KoqaError, match="other settings"):
        run_ensemble_eval(
            str(dacon_train),
            str(other),
            EvalConfig(),
            adapters,
            generators=[ScriptedMember(GOLD, {}, tokenizer), ScriptedMember(second, {}, tokenizer)],
        )


def test_an_ensemble_needs_two_different_adapters(tmp_path, dacon_train):
    adapter = _adapter(tmp_path / "a", b"w")
    with pytest.raises(KoqaError, match="at least two adapters"):
        run_ensemble_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(), [adapter])
    with pytest.raises(KoqaError, match="the same adapter is named twice"):
        evaluate(EvalConfig(data=str(dacon_train), out=str(tmp_path / "out"), adapter=[adapter, adapter]))


def test_the_same_adapter_in_two_spellings_is_one_member(tmp_path, dacon_train, default_model_dir):
    import shutil

    adapter = _adapter(tmp_path / "a", b"w")
    shutil.copytree(adapter, tmp_path / "copy")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    for other in (adapter + "/", str(tmp_path / "a" / ".." / "a"), str(tmp_path / "link"), str(tmp_path / "copy")):
        with pytest.raises(KoqaError, match=r"field 'adapter': is the same adapter as '.*a' \(the same weights"):
            run_ensemble_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(), [adapter, other])
        assert not (tmp_path / "out").exists()


def _random_lora(model_dir, out, seed):
    """A LoRA adapter with random (not zero) B matrices, so it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_loras(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("loras")
    return [_random_lora(tiny_model_dir, root / f"lora-{seed}", seed) for seed in (1, 2)]


def _reference_logprob(model, prompt, continuation):
    import torch

    ids = torch.tensor([prompt + continuation])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(prompt) + j - 1, t]) for j, t in enumerate(continuation))


def _score_cases():
    prompts = [[2, 1000, 2000, 3000, 4000, 5000], [2, 7000], [2, 10, 20, 30]]
    continuations = [[600, 700, 1], [800, 1], [1]]
    return prompts, continuations


def test_transformers_scores_are_the_log_probability_of_the_answer(tiny_model_dir, tiny_loras):
    from koqa.eval.hf_backend import HFGenerator

    prompts, continuations = _score_cases()
    generator = HFGenerator(str(tiny_model_dir), adapter=str(tiny_loras[0]), dtype="float32", device="cpu")
    expected = [_reference_logprob(generator.model, p, c) for p, c in zip(prompts, continuations)]
    batched = generator.score(prompts, continuations, batch_size=3)  # left-padded together
    one_by_one = generator.score(prompts, continuations, batch_size=1)
    assert batched == pytest.approx(expected, abs=1e-4) and one_by_one == pytest.approx(expected, abs=1e-4)
    assert all(s < 0 for s in expected)


@pytest.mark.vllm
def test_vllm_scores_match_transformers_with_and_without_the_prefix_cache(tiny_model_dir):
    pytest.importorskip("vllm")
    from koqa.eval.backends import load_generator

    prompts, continuations = _score_cases()
    passage = [2] + [1000 + 7 * i for i in range(299)]  # 300 tokens: two full 128-token KV blocks
    aligned = [2] + [3000 + 5 * i for i in range(255)]  # 256 tokens: its blocks end where the answer starts
    first = [(passage, [600, 1]), (aligned, [700, 800, 1])]
    # the same prompts again: read from the cache; for `aligned` the cache covers the row that
    # predicts the answer's first token, so that request is scored again without it
    second = [(passage + [11, 12], [650, 1]), (passage, [600, 1]), (aligned, [700, 800, 1])]
    hf_model = load_generator("hf", str(tiny_model_dir), dtype="float32")
    engine = load_generator("vllm", str(tiny_model_dir), max_model_len=512, dtype="float32")
    try:
        got = engine.score(prompts, continuations)
        cached_before = engine.cached_prompt_tokens
        got_first = engine.score([p for p, _ in first], [c for _, c in first])
        cached_first = engine.cached_prompt_tokens - cached_before
        cached_before = engine.cached_prompt_tokens
        got_second = engine.score([p for p, _ in second], [c for _, c in second])
        cached = engine.cached_prompt_tokens - cached_before
    finally:
        engine.close()
    assert got == pytest.approx(hf_model.score(prompts, continuations), abs=1e-3)
    assert got_first == pytest.approx(hf_model.score([p for p, _ in first], [c for _, c in first]), abs=1e-3)
    assert got_second == pytest.approx(hf_model.score([p for p, _ in second], [c for _, c in second]), abs=1e-3)
    assert got_second[1] == pytest.approx(got_first[0], abs=1e-4) and got_second[2] == pytest.approx(
        got_first[1], abs=1e-4
    )
    assert cached >= 3 * 256  # each of the three read two blocks from the cache
    # prompts never seen before are prefilled first, so even the first call reads the passage's blocks
    assert cached_first >= 256


def test_koqa_eval_with_two_adapters_writes_the_ensemble(tmp_path, dacon_train, tiny_model_dir, tiny_loras):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "koqa.cli",
            "eval",
            "--data",
            str(dacon_train),
            "--out",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--backend",
            "hf",
            "--adapter",
            str(tiny_loras[0]),
            "--adapter",
            str(tiny_loras[1]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        input="",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "member 1: f1" in result.stdout and "member 2: f1" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 6 and len(metrics["members"]) == 2
    members = [{r["id"]: r["prediction"] for r in _rows(out / f"member-{k}" / "predictions.csv")} for k in (1, 2)]
    chosen = {r["id"]: r["prediction"] for r in _rows(out / "predictions.csv")}
    assert all(chosen[i] in (members[0][i], members[1][i]) for i in chosen)  # always one member's answer
    disputed = sum(members[0][i] != members[1][i] for i in chosen)
    assert metrics["disputed"] == disputed and disputed > 0  # random adapters disagree
    scored = (out / "ensemble_scores.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(scored) == 1 + 2 * 2 * disputed  # header + every member on both candidates
