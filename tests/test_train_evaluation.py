"""Leaderboard F1 during training (eval_steps): the log rows, RUN/best/, early stopping, --resume,
and `koqa eval RUN` taking the best adapter unless told --checkpoint final.

The tiny random model answers nothing right, so every evaluation scores F1 0: the first evaluation
is the best, and every later one is "without improvement". That makes the bookkeeping exact to test.
"""

import json
import subprocess
import sys

import pytest

from conftest import DACON_ROWS, TINY_TRAINING

TINY = [*TINY_TRAINING, "--set", "save_steps=2", "--set", "eval_steps=2", "--set", "eval_backend=hf"]


def koqa(*args):
    return subprocess.run([sys.executable, "-m", "koqa.cli", *args], capture_output=True, text=True, timeout=600)


def eval_rows(run):
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if "eval_f1" in r]


def sft(run, data, model, *extra):
    return koqa(
        "sft", "--data", str(data), "--validation", str(data), "--out", str(run), "--model", str(model), *TINY, *extra
    )


def test_scores_are_logged_the_best_kept_and_early_stopping_stops(tmp_path, tiny_model_dir, dacon_train):
    run = tmp_path / "run"
    result = sft(run, dacon_train, tiny_model_dir, "--max-steps", "20", "--set", "early_stopping_patience=2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = eval_rows(run)
    assert [r["step"] for r in rows] == [2, 4, 6]  # best at 2, then two without improvement: stop
    losses = [json.loads(x) for x in (run / "log.jsonl").read_text(encoding="utf-8").splitlines() if '"loss"' in x]
    assert [r["step"] for r in losses] == [1, 2, 3, 4, 5, 6]  # an evaluation takes no training row's place
    assert all(r["eval_questions"] == len(DACON_ROWS) and 0 <= r["eval_f1"] <= 1 for r in rows)
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 6 and summary["stopped_early"] is True
    assert summary["best"]["step"] == 2
    best = json.loads((run / "best" / "koqa_best.json").read_text(encoding="utf-8"))
    assert best["step"] == 2 and best["eval_f1"] == rows[0]["eval_f1"]
    assert (run / "best" / "adapter_model.safetensors").is_file() and (run / "f1_curve.png").is_file()
    info = json.loads((run / "koqa_run.json").read_text(encoding="utf-8"))
    assert info["best"]["step"] == 2
    # the checkpoint early stopping saved holds the evaluations, for a later --resume
    state = json.loads((run / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text(encoding="utf-8"))
    assert [r["step"] for r in state["log_history"] if "eval_f1" in r] == [2, 4, 6]

    # koqa eval RUN takes best/; --checkpoint final takes adapter/
    for checkpoint, folder in (("best", "best"), ("final", "adapter")):
        out = tmp_path / f"ev-{checkpoint}"
        ev = koqa(
            "eval", "--data", str(dacon_train), "--adapter", str(run), "--out", str(out), "--backend", "hf",
            "--checkpoint", checkpoint,
        )  # fmt: skip
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert f"- adapter: {run / folder}\n" in (out / "report.md").read_text(encoding="utf-8")


def test_resume_keeps_the_best_and_the_patience_count(tmp_path, tiny_model_dir, dacon_train):
    run = tmp_path / "run"
    first = sft(run, dacon_train, tiny_model_dir, "--max-steps", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r["step"] for r in eval_rows(run)] == [2, 4]
    best_weights = (run / "best" / "adapter_model.safetensors").read_bytes()
    # go on to step 20 with patience 2: the evaluation at 4 was already one without improvement, so
    # the one at 6 is the second and stops the run (a count restarted at 0 would stop at 8; a best
    # forgotten by the resume would make step 6 the best)
    resumed = sft(
        run, dacon_train, tiny_model_dir, "--max-steps", "20", "--resume", "--set", "early_stopping_patience=2"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in eval_rows(run)] == [2, 4, 6]
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 6 and summary["best"]["step"] == 2 and summary["stopped_early"]
    assert (run / "best" / "adapter_model.safetensors").read_bytes() == best_weights


def test_eval_steps_without_validation_questions_is_refused(tmp_path, tiny_model_dir, dacon_train):
    result = koqa(
        "sft", "--data", str(dacon_train), "--out", str(tmp_path / "run"), "--model", str(tiny_model_dir),
        "--max-steps", "2", *TINY,
    )  # fmt: skip
    assert result.returncode == 2 and "eval_steps needs validation questions" in result.stderr
    assert "Traceback" not in result.stderr
    patience_alone = koqa(
        "sft", "--data", str(dacon_train), "--out", str(tmp_path / "run2"), "--set", "early_stopping_patience=3"
    )
    assert (
        patience_alone.returncode == 2
        and "early stopping needs evaluations during training: set eval_steps" in patience_alone.stderr
    )


@pytest.mark.vllm
def test_the_vllm_evaluation_path_scores_what_the_in_process_one_does(tmp_path, tiny_model_dir, dacon_train):
    """eval_backend vllm: the adapter merged into a copy and served by vLLM in a child process; the
    scores match the transformers path's (float32 would be exact; bf16 answers of a random model may
    differ, so the check is on the bookkeeping and that nothing is left behind)."""
    pytest.importorskip("vllm")
    run = tmp_path / "run"
    result = sft(run, dacon_train, tiny_model_dir, "--max-steps", "2", "--set", "eval_backend=vllm")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = eval_rows(run)
    assert [r["step"] for r in rows] == [2] and rows[0]["eval_questions"] == len(DACON_ROWS)
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["eval_backend"] == "vllm"
    assert (run / "best" / "adapter_model.safetensors").is_file()
    assert not (run / "evaluating").exists()  # the merged copy is removed


def test_the_last_evaluation_in_training_equals_koqa_eval_of_the_final_adapter(tmp_path, tiny_model_dir, dacon_train):
    """One evaluation core: the F1 training logs at its last step, and its answers, are koqa eval's for
    the final adapter on the same questions and backend (transformers), byte for byte."""
    import csv

    run = tmp_path / "run"
    result = sft(run, dacon_train, tiny_model_dir, "--max-steps", "4", "--set", "dtype=float32")
    assert result.returncode == 0, result.stderr[-3000:]
    last = eval_rows(run)[-1]
    evaluations = [json.loads(x) for x in (run / "eval_answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["step"] for e in evaluations] == [2, 4] and last["step"] == 4
    out = tmp_path / "final"
    ev = koqa(
        "eval", "--data", str(dacon_train), "--adapter", str(run), "--checkpoint", "final",
        "--backend", "hf", "--dtype", "float32", "--out", str(out),
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["f1"], metrics["exact_match"]) == (last["eval_f1"], last["eval_exact_match"])
    with open(out / "predictions.csv", encoding="utf-8", newline="") as handle:
        answered = {row["id"]: row["prediction"] for row in csv.DictReader(handle)}
    assert answered == evaluations[-1]["predictions"]
    assert any(answered.values())  # the tiny model says something: the comparison is of real text


def test_the_vllm_child_answers_every_question_of_an_evaluation_in_one_call(tmp_path, monkeypatch):
    """A merge and an engine start per evaluation: the core hands a streaming generator every prompt."""
    from types import SimpleNamespace

    from koqa.eval.pipeline import PreparedEval, generate_answers
    from koqa.train.evaluation import ChildVLLMGenerator

    calls = []
    child = ChildVLLMGenerator(None, None, "m")
    monkeypatch.setattr(child, "generate", lambda prompts, params: calls.append(len(prompts)) or ["a"] * len(prompts))
    records = [SimpleNamespace(id=f"q{i}", context="c", question=f"{i}?") for i in range(150)]
    renderer = SimpleNamespace(render=lambda context, question: SimpleNamespace(ids=[1, 2]))
    prepared = PreparedEval(records, renderer, "m", None, {}, "t", 64, 8)
    config = SimpleNamespace(chunk_size=None, batch_size=None, span="off")
    answers = generate_answers(prepared, None, config, child)
    assert calls == [150] and len(answers["raw"]) == 150


def test_tokens_per_second_leaves_out_the_evaluations(tmp_path, monkeypatch):
    """An evaluation at a logging step logs its row just before the step's training row: the rate
    of that row counts the training since the last one, not the evaluation's seconds, nor only the
    instant between the two rows."""
    from types import SimpleNamespace

    from koqa.runs import RunFolder
    from koqa.train import trainer

    now = [90.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: now[0])
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    logger = trainer.JsonlLogger(run, started=0.0, clock=SimpleNamespace(elapsed=lambda: 0.0))
    state = SimpleNamespace(is_world_process_zero=True, global_step=5, epoch=0.1, max_steps=10)
    logger.on_train_begin(None, state, None)
    for at, logs in [
        (100.0, {"loss": 1.0, "num_tokens": 1000}),  # 10 s of training, 1,000 tokens
        (160.0, {"eval_f1": 0.5, "eval_seconds": 50.0}),  # 10 s of training, then a 50-second evaluation
        (160.5, {"loss": 0.9, "num_tokens": 2050}),
    ]:
        now[0] = at
        logger.on_log(None, state, None, logs=logs)
    rates = [row.get("tokens_per_s") for row in run.log_rows()]
    assert rates == [100.0, None, 100.0]
