"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, for training and for scores.

`koqa sft --report-to ...` trains through transformers' own tracker integrations, pointed at the run
folder unless the environment says otherwise: TensorBoard writes RUN/tensorboard; W&B keeps its files
in RUN (``WANDB_DIR``; ``WANDB_MODE=offline`` works without an account); MLflow logs to
``MLFLOW_TRACKING_URI``, by default a local file store RUN/mlruns. RUN/trackers.json records which
tracker run the training used, so that `koqa eval` of that run's adapter with ``--report-to`` logs its
scores into the same run. `koqa eval` without such a run, `koqa compare` and `koqa sweep` open a tracker
run of their own in their --out folder.

Only numbers under koqa's own metric names are logged by koqa; transformers logs the training
arguments, whose token fields it masks; koqa's settings never hold a secret (koqa.settings refuses them).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from koqa.errors import KoqaError

log = logging.getLogger(__name__)
TRACKERS = ("tensorboard", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
RECORD = "trackers.json"
PROJECT = "koqa"
_ENV_SET: list[str] = []  # environment variables start_training set, unset again by finish_training


def report_to_setting(what: str):
    """The `report_to` setting of a command: which trackers get `what`."""
    from koqa.settings import setting

    return setting([], choices=TRACKERS, help=f"trackers that get {what}: {', '.join(TRACKERS)}")


def missing_packages(names: Iterable[str]) -> list[tuple[str, str]]:
    """(report_to, why) for each tracker asked for whose package is not installed: a config problem."""
    return [
        ("report_to", f"report_to {name} needs the {PACKAGES[name]} package: pip install 'koqa[trackers]'")
        for name in names
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None
    ]


def check_report_to(names: Iterable[str]) -> list[str]:
    """The trackers asked for, each known and installed ("none" and "" ask for none)."""
    chosen = [n for n in names if n and n != "none"]
    unknown = [n for n in chosen if n not in TRACKERS]
    if unknown:
        raise KoqaError(f"unknown tracker '{unknown[0]}'", field="report_to", fix=f"use {', '.join(TRACKERS)}")
    missing = missing_packages(chosen)
    if missing:
        raise KoqaError(missing[0][1], field="report_to")
    return chosen


def _mlflow_uri(folder: Path) -> str:
    """MLFLOW_TRACKING_URI, else a local file store in `folder` (MLflow's local-file mode)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    _default_env("MLFLOW_ALLOW_FILE_STORE", "true")
    return (folder.resolve() / "mlruns").as_uri()


def _default_env(name: str, value: str) -> None:
    if name not in os.environ:
        os.environ[name] = value
        _ENV_SET.append(name)


def start_training(report_to: Iterable[str], run_dir: Path) -> None:
    """Point the trackers transformers will open at the run folder (where the environment does not
    say otherwise). MLflow's run is opened here, so that its id is known after training: transformers
    joins an active run and leaves it open."""
    names = check_report_to(report_to)
    run_dir = Path(run_dir).resolve()
    if "tensorboard" in names:
        _default_env("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    if "wandb" in names:
        _default_env("WANDB_DIR", str(run_dir))
        _default_env("WANDB_PROJECT", PROJECT)
    if "mlflow" in names:
        import mlflow

        mlflow.set_tracking_uri(_mlflow_uri(run_dir))
        if mlflow.active_run() is None:
            mlflow.start_run(run_name=run_dir.name)


def finish_training(report_to: Iterable[str], run_dir: Path) -> dict:
    """Close the trackers' runs and record them in RUN/trackers.json."""
    names = [n for n in report_to if n in TRACKERS]
    record: dict[str, dict] = {}
    if "tensorboard" in names:
        record["tensorboard"] = {"log_dir": os.environ.get("TENSORBOARD_LOGGING_DIR")}
    if "wandb" in names:
        import wandb

        if wandb.run is not None:
            record["wandb"] = {"id": wandb.run.id, "project": wandb.run.project, "dir": os.environ.get("WANDB_DIR")}
            wandb.finish()
    if "mlflow" in names:
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            record["mlflow"] = {"run_id": active.info.run_id, "tracking_uri": mlflow.get_tracking_uri()}
            mlflow.end_run()
    while _ENV_SET:
        os.environ.pop(_ENV_SET.pop(), None)
    if record:
        from koqa.atomic import write_json

        write_json(Path(run_dir) / RECORD, record)
    return record


def numbers(metrics: dict, prefix: str) -> dict[str, float]:
    """The numeric leaves of `metrics`, named prefix/key/inner (intervals and lists are left out)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[name] = float(value)
        elif isinstance(value, dict):
            flat.update(numbers(value, name))
    return flat


def log_scores(report_to: Iterable[str], metrics: dict, out: Path, *, prefix: str, joined_run: Path | None = None):
    """Log `metrics` (numeric leaves, under `prefix`) to each tracker: into the training run recorded in
    `joined_run`/trackers.json where there is one, else into a new tracker run kept in `out`."""
    names = check_report_to(report_to)
    if not names:
        return
    values = numbers(metrics, prefix)
    record = {}
    if joined_run is not None and (Path(joined_run) / RECORD).is_file():
        record = json.loads((Path(joined_run) / RECORD).read_text(encoding="utf-8"))
    out = Path(out)
    for name in names:
        joined = record.get(name)
        where = f"the training run's {name} run" if joined else f"a new {name} run in {out}"
        try:
            {"tensorboard": _tensorboard, "wandb": _wandb, "mlflow": _mlflow}[name](values, out, joined)
        except Exception as exc:  # the scores are written already: a tracker that fails costs only its copy
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            log.warning("%s did not take the %s metrics (they are in %s): %s", name, prefix, out, reason)
            continue
        log.info("logged %d %s metrics to %s", len(values), prefix, where)


def _tensorboard(values: dict, out: Path, joined: dict | None) -> None:
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(joined["log_dir"]) if joined else out / "tensorboard"
    writer = SummaryWriter(log_dir=str(folder))
    for key, value in values.items():
        writer.add_scalar(key, value)
    writer.close()


def _wandb(values: dict, out: Path, joined: dict | None) -> None:
    import wandb

    if joined:
        run = wandb.init(id=joined["id"], project=joined["project"], dir=joined["dir"], resume="allow")
    else:
        out.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), dir=str(out.resolve()), name=out.name)
    run.log(values)
    run.summary.update(values)
    run.finish()


def _mlflow(values: dict, out: Path, joined: dict | None) -> None:
    import mlflow

    if joined:
        if joined["tracking_uri"].startswith("file:"):
            _default_env("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(joined["tracking_uri"])
        context = mlflow.start_run(run_id=joined["run_id"])
    else:
        mlflow.set_tracking_uri(_mlflow_uri(out))
        context = mlflow.start_run(run_name=out.resolve().name)
    with context:
        mlflow.log_metrics(values)
