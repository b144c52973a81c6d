"""The command line as a user meets it: help, one-line errors, exit codes, speed of start-up."""

import json
import subprocess
import sys
import time

import pytest

from conftest import write_csv
from koqa.cli import COMMANDS, build_parser

KOQA = [sys.executable, "-m", "koqa.cli"]


def run(args, **kwargs):
    return subprocess.run(KOQA + args, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_lists_options_with_defaults(command):
    result = run(([command] if command else []) + ["--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: koqa" in result.stdout
    if command in ("preprocess", "eval", "demo"):
        assert "(default:" in result.stdout
    assert "(default: None)" not in result.stdout  # no default, or one the help already states
    assert ") (default:" not in result.stdout


def test_help_is_fast_and_imports_no_heavy_library():
    started = time.perf_counter()
    code = (
        "import sys; from koqa.cli import build_parser; build_parser(); "
        "print([m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"
    assert time.perf_counter() - started < 10


def test_every_subcommand_is_wired():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_score_end_to_end(tmp_path, dacon_train):
    pred = write_csv(
        tmp_path / "pred.csv",
        ["id", "answer"],
        [("TRAIN_000", "1,200억 원"), ("TRAIN_001", "반도체"), ("TRAIN_002", "부산")],
    )
    result = run(["score", "--gold", str(dacon_train), "--pred", str(pred), "--out", str(tmp_path / "m")])
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text(encoding="utf-8"))
    # 6 gold questions: one exact, one partial (반도체 vs 반도체 소재: p=1, r=3/5 -> 0.75), four scoring 0
    assert metrics["n"] == 6 and metrics["exact_match"] == pytest.approx(1 / 6)
    assert metrics["f1"] == pytest.approx((1 + 0.75) / 6)
    assert set(metrics) >= {"f1", "exact_match", "token_f1", "n"}


def test_an_install_without_kiwipiepy_is_a_one_line_error(tmp_path, dacon_train):
    """kiwipiepy is a dependency; where an environment lost it, scoring says so in one line."""
    import os

    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "kiwipiepy.py").write_text("raise ModuleNotFoundError(\"No module named 'kiwipiepy'\")\n")
    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [("TRAIN_000", "1,200억 원")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    result = run(["score", "--gold", str(dacon_train), "--pred", str(pred), "--out", str(tmp_path / "m")], env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "kiwipiepy cannot be imported (No module named 'kiwipiepy')" in result.stderr
    assert "pip install 'kiwipiepy>=0.24,<0.25'" in result.stderr
    assert not (tmp_path / "m" / "metrics.json").exists()


def test_score_refuses_predictions_for_another_test_set(tmp_path, dacon_train):
    pred = write_csv(tmp_path / "other.csv", ["id", "answer"], [("TEST_999", "x")])
    result = run(["score", "--gold", str(dacon_train), "--pred", str(pred)])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert (
        "other.csv: field 'id': no prediction id is in train.csv: predictions for another test set?" in result.stderr
    )


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    missing = tmp_path / "nope.csv"
    result = run(["score", "--gold", str(missing), "--pred", str(missing)])
    assert result.returncode == 2
    assert result.stderr.strip() == f"koqa score: error: {missing}: file not found"


def test_unknown_option_is_refused():
    result = run(["score", "--gold", "a", "--pred", "b", "--colour", "red"])
    assert result.returncode == 2 and "unrecognized arguments: --colour red" in result.stderr


def test_a_write_error_is_one_line_and_keeps_the_previous_output(tmp_path):
    sample = write_csv(tmp_path / "sample.csv", ["id", "answer"], [("T1", "")])
    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [("T1", "서울")])
    out = tmp_path / "submission.csv"
    out.mkdir()  # something that cannot be replaced by a file
    (out / "keep.txt").write_text("previous", encoding="utf-8")
    result = run(["submit", "--pred", str(pred), "--sample", str(sample), "--out", str(out)])
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "nothing already written was changed" in result.stderr
    assert (out / "keep.txt").read_text(encoding="utf-8") == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv", "sample.csv", "submission.csv"]
