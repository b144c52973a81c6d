"""Experiment trackers in their offline / local-file modes: training and `koqa eval` log into the same
tracker run, `koqa compare` into its own; no secret reaches a tracker's files."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import TINY_TRAINING
from koqa import trackers

INSTALLED = [name for name in trackers.TRACKERS if importlib.util.find_spec(trackers.PACKAGES[name])]
SECRET = "hf_" + "Qv7" * 12


def koqa(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "koqa.cli", *map(str, args)], capture_output=True, text=True, timeout=900, env=env
    )


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in {p.parent for p in folder.rglob("events.out.tfevents.*")}:
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.skipif(not INSTALLED, reason="no tracker package installed (pip install 'koqa[trackers]')")
def test_training_and_eval_log_to_the_same_tracker_runs(tmp_path, tiny_model_dir, dacon_train, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local-file mode, for the client below
    env = dict(os.environ, HF_TOKEN=SECRET, WANDB_MODE="offline", WANDB_SILENT="true")
    for name in ("MLFLOW_TRACKING_URI", "WANDB_DIR", "TENSORBOARD_LOGGING_DIR"):
        env.pop(name, None)
    run, ev = tmp_path / "run", tmp_path / "ev"
    report = ["--report-to", ",".join(INSTALLED)]
    trained = koqa("sft", "--data", dacon_train, "--out", run, "--model", tiny_model_dir, "--max-steps", "2",
                   *TINY_TRAINING, *report, env=env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = koqa("eval", "--data", dacon_train, "--adapter", run, "--out", ev, "--backend", "hf", *report, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    record = json.loads((run / "trackers.json").read_text(encoding="utf-8"))
    assert set(record) == set(INSTALLED)
    f1 = json.loads((ev / "metrics.json").read_text(encoding="utf-8"))["f1"]
    if "tensorboard" in INSTALLED:
        tags = tensorboard_scalars(run / "tensorboard")
        assert {"train/loss", "eval/f1", "eval/exact_match"} <= tags, tags
    if "mlflow" in INSTALLED:
        from mlflow.tracking import MlflowClient

        logged = MlflowClient(record["mlflow"]["tracking_uri"]).get_run(record["mlflow"]["run_id"]).data.metrics
        assert "loss" in logged and logged["eval/f1"] == pytest.approx(f1)
    if "wandb" in INSTALLED:
        runs = list((run / "wandb").glob(f"offline-run-*-{record['wandb']['id']}"))
        assert len(runs) == 2  # the training and the evaluation, under one run id
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.skipif("tensorboard" not in INSTALLED, reason="tensorboard is not installed")
def test_compare_logs_its_table_to_a_run_of_its_own(tmp_path):
    import csv

    for name, answers in (("a", ["서울", "부산"]), ("b", ["서울", "대구"])):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "predictions.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "prediction", "answer", "f1", "em"])
            for i, answer in enumerate(answers):
                score = float(answer == ["서울", "부산"][i])
                writer.writerow([f"q{i}", "?", answer, ["서울", "부산"][i], score, score])
    out = tmp_path / "cmp"
    result = koqa(
        "compare", tmp_path / "a", tmp_path / "b", "--out", out, "--report-to", "tensorboard", env=os.environ
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"compare/base/f1", "compare/b/delta_f1"} <= tensorboard_scalars(out / "tensorboard")


def test_a_tracker_whose_package_is_missing_is_refused_before_anything_runs(monkeypatch):
    from koqa.errors import KoqaError
    from koqa.settings import build
    from koqa.train.train_config import TrainConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(KoqaError, match=r"report_to wandb needs the wandb package: pip install 'koqa\[trackers\]'"):
        build(TrainConfig, [("cli", {"data": "x.csv", "out": "run", "report_to": ["wandb"]})])
    with pytest.raises(KoqaError, match="report_to must be one of tensorboard, wandb, mlflow"):
        build(TrainConfig, [("cli", {"data": "x.csv", "out": "run", "report_to": ["comet"]})])
