"""koqa.api, the stages for notebooks: the same settings and checks as the commands, results that hold
their paths and metrics, tables as DataFrames; and docs/notebook_example.py run end to end."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import DACON_ROWS, REPO
from koqa import api as kq
from koqa.errors import KoqaError


def test_settings_are_checked_as_on_the_command_line(tmp_path, dacon_train):
    with pytest.raises(KoqaError, match="lora_r must be positive"):
        kq.train(data=dacon_train, out=tmp_path / "run", lora_r=0)
    with pytest.raises(KoqaError, match="unknown key 'no_such_setting'"):
        kq.evaluate(data=dacon_train, out=tmp_path / "ev", no_such_setting=1)
    assert not (tmp_path / "run").exists()


def test_data_given_where_the_config_file_goes_says_so(tmp_path, dacon_train):
    with pytest.raises(KoqaError, match=r"train.csv: field 'config': is not a config file .*data='.*train.csv'"):
        kq.evaluate(dacon_train, out=tmp_path / "ev")
    assert not (tmp_path / "ev").exists()


def test_no_adapter_evaluates_the_base_model(tmp_path, tiny_model_dir, dacon_train):
    settings = dict(data=dacon_train, model=tiny_model_dir, backend="hf", max_new_tokens=4, limit=2)
    base = kq.evaluate(adapter=None, out=tmp_path / "none", **settings)
    assert base.metrics["n"] == 2
    plain = kq.evaluate(out=tmp_path / "plain", **settings)
    assert list(base.predictions()["prediction"]) == list(plain.predictions()["prediction"])


def test_stages_chain_and_give_dataframes(tmp_path, tiny_model_dir, dacon_train, default_model_dir):
    data = kq.preprocess(dacon_train, out=tmp_path / "data", validation_fraction=0.5)
    assert data.train.is_file() and data.validation.is_file()
    records = data.records("train")
    assert isinstance(records, pd.DataFrame) and len(records) == data.stats["splits"]["train"]
    assert "prompt_tokens" in data.statistics().index

    run = kq.train(
        data=data, out=tmp_path / "run", model=tiny_model_dir, max_steps=2, max_length=256, batch_size=2,
        lora_r=4, logging_steps=1, validation_limit=0, eval_steps=2, eval_backend="hf",
    )  # fmt: skip
    assert run.adapter.is_dir() and run.best["step"] == 2
    log = run.log()
    assert list(log["step"].dropna().astype(int).unique()) == [1, 2] and "eval_f1" in log

    evaluation = kq.evaluate(data=dacon_train, adapter=run, out=tmp_path / "ev", backend="hf", max_new_tokens=8)
    predictions = evaluation.predictions()
    assert list(predictions["id"]) == [row[0] for row in DACON_ROWS]
    assert predictions["f1"].mean() == pytest.approx(evaluation.metrics["f1"], abs=1e-4)
    assert len(evaluation.errors()) == sum(predictions["em"] < 1)
    assert evaluation.by_question_type()["n"].sum() == len(DACON_ROWS)

    final = kq.evaluate(
        data=dacon_train, adapter=run, checkpoint="final", out=tmp_path / "ev2", backend="hf", max_new_tokens=8
    )
    table = kq.compare(evaluation, final).table()
    assert list(table["run"]) == [str(tmp_path / "ev"), str(tmp_path / "ev2")]
    assert table.loc[1, "n"] == len(DACON_ROWS)


def test_the_notebook_example_runs_end_to_end(tmp_path, tiny_default_home):
    # every cell as written, on the tiny model standing in for the default one so that CI stays
    # short: the same stages, backends (vLLM included) and files
    result = subprocess.run(
        # as a notebook runs it: no main script for vLLM's spawned engine process to import again
        [sys.executable, "-c", f"import runpy; runpy.run_path({str(REPO / 'docs' / 'notebook_example.py')!r})"],
        cwd=tmp_path,
        env={**os.environ, "KOQA_HOME": str(tiny_default_home)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    submission = pd.read_csv(tmp_path / "runs" / "nb" / "submission.csv")
    sample = pd.read_csv(REPO / "data_tools" / "demo" / "sample_submission.csv")
    assert list(submission["id"]) == list(sample["id"])
    assert (tmp_path / "runs" / "nb" / "lora" / "best" / "adapter_model.safetensors").is_file()
