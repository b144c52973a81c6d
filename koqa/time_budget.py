"""Training for a wall-clock budget: stop after N minutes, and optionally let the learning rate
follow the clock so that its schedule (cosine, linear, constant with or without warm-up) runs its
course when the budget runs out.

A step-count schedule with `--max-minutes` stops wherever the clock says, usually with the learning
rate still high; `schedule_over: minutes` spends the whole decay inside the budget instead.
The clock counts training time only (not model loading) and survives `--resume`: every checkpoint
holds the seconds trained so far.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from koqa.atomic import write_json

CLOCK_FILE = "koqa_clock.json"


def _decay(shape):
    """A schedule of `progress` (0..1) of the run: linear warm-up over the first `warmup` share, then
    `shape(share of the rest done)`; `constant` alone has no warm-up, as in transformers."""

    def factor(progress: float, warmup: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if warmup > 0 and progress < warmup:
            return progress / warmup
        return shape((progress - warmup) / max(1e-9, 1.0 - warmup))

    return factor


# the learning-rate schedules a time budget can follow (lr_scheduler with schedule_over: minutes)
TIME_SCHEDULES = {
    "cosine": _decay(lambda done: 0.5 * (1.0 + math.cos(math.pi * done))),
    "linear": _decay(lambda done: 1.0 - done),
    "constant_with_warmup": _decay(lambda done: 1.0),
    "constant": lambda progress, warmup: 1.0,
}
cosine_with_warmup = TIME_SCHEDULES["cosine"]


class TrainingClock:
    """Seconds of training so far, across resumed runs."""

    def __init__(self, budget_seconds: float | None, already_trained: float = 0.0):
        self.budget = budget_seconds
        self.offset = already_trained
        self.started: float | None = None

    @classmethod
    def resumed_from(cls, budget_seconds: float | None, checkpoint: str | None) -> TrainingClock:
        trained = 0.0
        if checkpoint and (Path(checkpoint) / CLOCK_FILE).is_file():
            trained = float(json.loads((Path(checkpoint) / CLOCK_FILE).read_text(encoding="utf-8"))["trained_seconds"])
        return cls(budget_seconds, trained)

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def progress(self) -> float:
        return self.elapsed() / self.budget if self.budget else 0.0

    def spent(self) -> bool:
        return bool(self.budget) and self.elapsed() >= self.budget


def time_lr_lambda(clock: TrainingClock, warmup: float, schedule: str = "cosine"):
    """A LambdaLR factor function that ignores the step number and reads the clock."""
    factor = TIME_SCHEDULES[schedule]
    return lambda _step: factor(clock.progress(), warmup)


def budget_callbacks(clock: TrainingClock) -> list:
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Start the clock with training, stop (and save) at the end of the last step that fits the
        budget (a step is not begun when the time left is shorter than the step just taken: with
        `koqa rl`'s long steps, beginning one more would overrun the budget by most of a step), and
        keep the clock in every checkpoint so that --resume continues the same budget."""

        step_started: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_step_begin(self, args, state, control, **kwargs):
            self.step_started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            took = time.perf_counter() - self.step_started if self.step_started is not None else 0.0
            if clock.spent() or (clock.budget and clock.elapsed() + took > clock.budget):
                control.should_training_stop = True
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    write_json(folder / CLOCK_FILE, {"trained_seconds": round(clock.elapsed(), 3)})

    return [TimeBudget()]
