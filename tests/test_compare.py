"""koqa compare: paired intervals and tests between runs on the same questions."""

import csv
import json
import random
import subprocess
import sys

import pytest

from koqa.errors import KoqaError
from koqa.eval.compare import CompareConfig, compare, paired_difference, read_scores
from koqa.eval.significance import bootstrap_interval, mcnemar_p_value, sign_flip_p_value


def write_scored(path, rows):
    """A `koqa eval` predictions.csv: rows of (id, prediction, f1, em)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "predictions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "question", "answer", "prediction", "f1", "em"])
        for qid, prediction, f1, em in rows:
            writer.writerow([qid, "q", "a", prediction, f"{f1:.4f}", f"{em:.4f}"])
    return path


def test_paired_difference_and_its_standard_error(tmp_path):
    base = write_scored(tmp_path / "a", [("q1", "x", 0.5, 0), ("q2", "y", 1.0, 1), ("q3", "z", 0.0, 0)])
    other = write_scored(tmp_path / "b", [("q1", "x", 1.0, 1), ("q2", "y", 1.0, 1), ("q3", "w", 0.5, 0)])
    diff = paired_difference(read_scores(base, "f1"), read_scores(other, "f1"))
    assert diff.n == 3 and diff.mean == pytest.approx(1 / 3)
    assert diff.standard_error == pytest.approx(((2 * (0.5 - 1 / 3) ** 2 + (1 / 3) ** 2) / 2 / 3) ** 0.5)


def test_mcnemar_exact_by_hand():
    # of 10 questions one run alone got right, the base run got 1: 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_p_value(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_p_value(5, 5) == 1.0 and mcnemar_p_value(0, 0) == 1.0


def test_the_interval_covers_a_known_difference_and_the_tests_see_it():
    """Over 100 synthetic comparisons with a true difference of 0.05, the 95% interval covers it about
    95 times in 100 (here: at least 88); the permutation test finds a difference that large."""
    rng = random.Random(1)
    covered, significant = 0, 0
    for seed in range(100):
        diffs = [0.05 + rng.gauss(0, 0.2) for _ in range(300)]  # noisy per question, 0.05 on average
        low, high = bootstrap_interval(diffs, resamples=1000, seed=seed)
        covered += low < 0.05 < high
        significant += sign_flip_p_value(diffs, 1000, seed) < 0.05
    assert 88 <= covered <= 100 and significant >= 80
    null = [rng.gauss(0, 0.2) for _ in range(300)]  # no true difference
    assert sign_flip_p_value(null, 2000, 0) > 0.01
    assert bootstrap_interval([0.0] * 10) == [0.0, 0.0] and sign_flip_p_value([0.0] * 10) == 1.0


def test_compare_reports_each_run_against_the_first(tmp_path):
    ids = [f"q{i}" for i in range(40)]
    base = write_scored(tmp_path / "base", [(i, "a", 0.0, 0) for i in ids])
    better = write_scored(
        tmp_path / "better",
        [(i, "b" if n < 10 else "a", 1.0 if n < 10 else 0.0, 1 if n < 10 else 0) for n, i in enumerate(ids)],
    )
    same = write_scored(tmp_path / "same", [(i, "a", 0.0, 0) for i in ids])
    result = compare(CompareConfig(runs=[str(base), str(better), str(same)], out=str(tmp_path / "cmp")))
    first, second = result["runs"]
    assert first["delta_f1"] == pytest.approx(0.25) and first["answers_differ"] == 10
    assert (first["wins"], first["losses"]) == (10, 0)
    assert first["delta_f1_ci95"][0] > 0 and first["delta_f1_p"] < 0.01
    assert first["exact_match_mcnemar_p"] == pytest.approx(2 / 2**10)
    assert second["delta_f1"] == 0 and second["delta_f1_p"] == 1.0 and second["answers_differ"] == 0
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))
    assert saved["resamples"] == 2000 and saved["seed"] == 0 and len(saved["runs"]) == 2
    assert "| " + str(better) in (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")


def test_compare_refuses_runs_on_other_questions(tmp_path):
    base = write_scored(tmp_path / "a", [("q1", "x", 1.0, 1), ("q2", "y", 0.0, 0)])
    other = write_scored(tmp_path / "b", [("q1", "x", 1.0, 1), ("q3", "y", 0.0, 0)])
    with pytest.raises(
        KoqaError,
        match=r"answered different questions \(1 only in the first, 1 only in the second; "
        r"e\.g\. \['q2'\]\)",
    ):
        compare(CompareConfig(runs=[str(base), str(other)]))
    unscored = tmp_path / "c"
    unscored.mkdir()
    (unscored / "predictions.csv").write_text("id,question,prediction\nq1,q,x\n", encoding="utf-8")
    with pytest.raises(KoqaError, match="field 'f1': no 'f1' column"):
        compare(CompareConfig(runs=[str(base), str(unscored)]))
    with pytest.raises(KoqaError, match="compare needs two runs or more"):
        compare(CompareConfig(runs=[str(base)]))


def test_compare_on_the_command_line(tmp_path):
    base = write_scored(tmp_path / "a", [("q1", "x", 1.0, 1), ("q2", "y", 0.0, 0)])
    other = write_scored(tmp_path / "b", [("q1", "x", 1.0, 1), ("q2", "z", 0.5, 0)])
    result = subprocess.run(
        [sys.executable, "-m", "koqa.cli", "compare", str(base), str(other), "--resamples", "500"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "| ΔF1 [95% CI] |" in result.stdout and "+0.2500" in result.stdout


def test_runs_over_other_questions_under_the_same_ids_are_not_paired(tmp_path):
    for name, question in (("a", "q"), ("b", "another question")):
        path = tmp_path / name
        path.mkdir()
        with open(path / "predictions.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "answer", "prediction", "f1", "em"])
            writer.writerow(["x1", "q", "a", "a", "1.0", "1.0"])
            writer.writerow(["x2", question, "a", "b", "0.0", "0.0"])
    with pytest.raises(KoqaError, match="asked other questions under the same ids") as info:
        compare(CompareConfig(runs=[str(tmp_path / "a"), str(tmp_path / "b")]))
    assert "'x2'" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,question,prediction,f1,em\nq1,질문,답,1,1\n".encode("cp949"), "is not UTF-8 text"),
        (b"id,f1,em\nq1,1\x00,1\n", "row 2: field .f1.: .1\\x00. is not a number"),
    ],
)
def test_a_predictions_file_koqa_did_not_write_is_one_line(tmp_path, content, message):
    base = write_scored(tmp_path / "a", [("q1", "x", 1.0, 1)])
    other = tmp_path / "b"
    other.mkdir()
    (other / "predictions.csv").write_bytes(content)
    with pytest.raises(KoqaError, match=f"predictions.csv: {message}"):
        compare(CompareConfig(runs=[str(base), str(other)]))
    result = subprocess.run(
        [sys.executable, "-m", "koqa.cli", "compare", str(base), str(other)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
