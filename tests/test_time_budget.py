"""Training for a wall-clock budget: the cosine schedule that follows the clock, the clock kept in
checkpoints for --resume, and a real run that stops on time with its learning rate decayed."""

import json
import math
import subprocess
import sys

import pytest

from conftest import TINY_TRAINING
from koqa.errors import KoqaError
from koqa.settings import load
from koqa.time_budget import CLOCK_FILE, TrainingClock, cosine_with_warmup
from koqa.train.train_config import TrainConfig

TINY = TINY_TRAINING


def test_cosine_with_warmup_shape():
    assert cosine_with_warmup(0.0, 0.1) == 0.0
    assert cosine_with_warmup(0.05, 0.1) == pytest.approx(0.5)
    assert cosine_with_warmup(0.1, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(0.55, 0.1) == pytest.approx(0.5)
    assert cosine_with_warmup(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert cosine_with_warmup(3.0, 0.1) == pytest.approx(0.0, abs=1e-12)  # past the budget: stays at 0
    assert cosine_with_warmup(0.25, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_clock_continues_from_a_checkpoint(tmp_path):
    (tmp_path / CLOCK_FILE).write_text(json.dumps({"trained_seconds": 45.0}))
    clock = TrainingClock.resumed_from(60.0, str(tmp_path))
    assert clock.elapsed() == pytest.approx(45.0) and not clock.spent()
    assert clock.progress() == pytest.approx(0.75)
    assert TrainingClock.resumed_from(60.0, str(tmp_path / "none")).elapsed() == 0.0
    assert TrainingClock(1e-9, already_trained=1.0).spent()


def test_a_step_is_not_begun_when_the_time_left_is_shorter_than_the_last_one():
    from transformers import TrainerControl, TrainerState

    from koqa.time_budget import budget_callbacks

    def stops_after(step_seconds: float, trained: float, budget: float = 10.0) -> bool:
        clock = TrainingClock(budget, already_trained=trained)
        (callback,) = budget_callbacks(clock)
        control = TrainerControl()
        callback.on_train_begin(None, TrainerState(), control)
        callback.on_step_begin(None, TrainerState(), control)
        callback.step_started -= step_seconds  # as if the step had taken step_seconds
        callback.on_step_end(None, TrainerState(), control)
        return control.should_training_stop and control.should_save

    assert not stops_after(2.0, trained=7.0)  # 7 s + a 2-s step fits 10 s
    assert stops_after(4.0, trained=7.0)  # another 4-s step would end past 10 s
    assert stops_after(0.0, trained=10.5)  # spent
    assert not TrainingClock(None).spent() and not stops_after(100.0, trained=1e6, budget=None)


def test_schedule_over_minutes_needs_a_budget():
    with pytest.raises(KoqaError, match="needs a time budget"):
        load(TrainConfig, flags={"data": "x", "out": "y", "schedule_over": "minutes"})
    with pytest.raises(KoqaError, match="schedule_over must be one of steps, minutes"):
        load(TrainConfig, flags={"data": "x", "out": "y", "schedule_over": "hours", "max_minutes": 1})


def test_run_stops_on_time_with_the_learning_rate_decayed(tmp_path, tiny_model_dir, dacon_train):
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "koqa.cli",
            "sft",
            "--data",
            str(dacon_train),
            "--out",
            str(run),
            "--model",
            str(tiny_model_dir),
            "--max-minutes",
            "0.25",
            "--set",
            "schedule_over=minutes",
            "--set",
            "epochs=1000",
            "--set",
            "warmup_ratio=0.1",
            "--set",
            "learning_rate=0.001",
            "--set",
            "save_steps=1000000",
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    rates = [(r["elapsed_s"], r["learning_rate"]) for r in rows if "learning_rate" in r]
    assert len(rates) >= 10, rates
    peak = max(lr for _, lr in rates)
    assert 0.5e-3 < peak <= 1e-3
    assert rates[-1][1] < 0.2 * peak, rates[-5:]  # decayed towards 0 by the end of the budget
    top = max(range(len(rates)), key=lambda i: rates[i][1])
    assert all(a[1] >= b[1] for a, b in zip(rates[top:], rates[top + 1 :]))  # falls monotonically after the peak
    # a step is not begun when less time is left than the last one took: the run ends within one
    # step (the longest logged, plus rounding) of the 15-second budget, not at some earlier point
    trained = [r["trained_s"] for r in rows if "learning_rate" in r]
    longest = max(b - a for a, b in zip(trained, trained[1:])) + 0.2
    summary = json.loads((run / "metrics.json").read_text())
    assert 15 - longest <= summary["train_seconds"] < 60, (summary["train_seconds"], longest)
    final = sorted((run / "checkpoints").glob("checkpoint-*"))[-1]
    assert json.loads((final / CLOCK_FILE).read_text())["trained_seconds"] >= 15 - longest
