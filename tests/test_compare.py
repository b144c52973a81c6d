import math

import pytest

from koqa.errors import KoqaError
from koqa.eval.compare import paired_difference, read_scores


def test_paired_difference_hand_worked():
    base = {"a": 0.0, "b": 0.5, "c": 1.0, "d": 1.0}
    other = {"a": 1.0, "b": 0.5, "c": 1.0, "d": 0.5}
    # differences 1, 0, 0, -0.5: mean 0.125; sample variance (0.765625 + 3*0.015625 + 0.390625)/3 = 0.40104...
    result = paired_difference(base, other)
    assert result.n == 4
    assert result.mean == pytest.approx(0.125)
    variance = ((1 - 0.125) ** 2 + 2 * 0.125**2 + (-0.5 - 0.125) ** 2) / 3
    assert result.standard_error == pytest.approx(math.sqrt(variance / 4))


def test_shared_difficulty_gives_a_small_paired_error():
    # both runs fail and pass the same questions, the second gains 0.1 on each: the paired error is 0
    base = {str(i): float(i % 2) * 0.8 for i in range(100)}
    other = {k: v + 0.1 for k, v in base.items()}
    result = paired_difference(base, other)
    assert result.mean == pytest.approx(0.1)
    assert result.standard_error == pytest.approx(0.0, abs=1e-12)


def test_paired_difference_refuses_different_questions():
    with pytest.raises(KoqaError, match="different questions"):
        paired_difference({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0})


def test_read_scores_names_the_file_row_and_field(tmp_path):
    good = tmp_path / "predictions.csv"
    good.write_text(
        "id,question,answer,prediction,f1,em\nq1,질문,서울,서울,1.0000,1.0000\nq2,질문,부산,대구,0.0000,0.0000\n",
        encoding="utf-8",
    )
    assert read_scores(good, "f1") == {"q1": 1.0, "q2": 0.0}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prediction,f1\nq1,서울,1.0\nq2,부산,x\n", encoding="utf-8")
    with pytest.raises(KoqaError, match=r"bad.csv: row 3: field 'f1'"):
        read_scores(bad, "f1")
    unscored = tmp_path / "unscored.csv"
    unscored.write_text("id,question,prediction\nq1,질문,서울\n", encoding="utf-8")
    with pytest.raises(KoqaError, match="no 'em' column"):
        read_scores(unscored, "em")
