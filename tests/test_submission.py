import csv

import pytest

from conftest import write_csv
from koqa.errors import KoqaError
from koqa.eval.submission import SubmitConfig, submit


def write_submission(pred, sample, out, **options):
    return submit(SubmitConfig(pred=pred, sample=sample, out=out, **options))


@pytest.fixture
def sample(tmp_path):
    return write_csv(tmp_path / "sample_submission.csv", ["id", "answer"], [("T2", ""), ("T1", ""), ("T3", "")])


def _read(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_answers_in_sample_order(tmp_path, sample):
    pred = write_csv(
        tmp_path / "predictions.csv",
        ["id", "question", "prediction"],
        [("T1", "q", "서울"), ("T3", "q", "1,200억 원"), ("T2", "q", "김민준")],
    )
    out = tmp_path / "submission.csv"
    report = write_submission(str(pred), str(sample), str(out))
    assert _read(out) == [["id", "answer"], ["T2", "김민준"], ["T1", "서울"], ["T3", "1,200억 원"]]
    assert report["rows"] == 3 and report["empty"] == 0


def test_missing_extra_and_foreign_ids_fail_and_keep_the_previous_file(tmp_path, sample):
    out = tmp_path / "submission.csv"
    out.write_text("previous\n", encoding="utf-8")
    missing = write_csv(tmp_path / "m.csv", ["id", "answer"], [("T1", "a"), ("T2", "b")])
    with pytest.raises(
        KoqaError, match="m.csv: field 'id': 1 id\\(s\\) of sample_submission.csv have no prediction, e.g. 'T3'"
    ):
        write_submission(str(missing), str(sample), str(out))
    extra = write_csv(tmp_path / "e.csv", ["id", "answer"], [("T1", "a"), ("T2", "b"), ("T3", "c"), ("T9", "d")])
    with pytest.raises(KoqaError, match="1 prediction id\\(s\\) are not in sample_submission.csv, e.g. 'T9'"):
        write_submission(str(extra), str(sample), str(out))
    foreign = write_csv(tmp_path / "f.csv", ["id", "answer"], [("X1", "a"), ("X2", "b")])
    with pytest.raises(KoqaError, match="predictions for another test set"):
        write_submission(str(foreign), str(sample), str(out))
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_duplicate_ids(tmp_path, sample):
    dup_pred = write_csv(tmp_path / "d.csv", ["id", "answer"], [("T1", "a"), ("T1", "b")])
    with pytest.raises(KoqaError, match="duplicate id 'T1'"):
        write_submission(str(dup_pred), str(sample), str(tmp_path / "s.csv"))
    dup_sample = write_csv(tmp_path / "ds.csv", ["id", "answer"], [("T1", ""), ("T1", "")])
    with pytest.raises(KoqaError, match="ds.csv: row 3: field 'id': duplicate id 'T1'"):
        write_submission(str(dup_pred), str(dup_sample), str(tmp_path / "s.csv"))


@pytest.mark.parametrize("value", ["", "  ", "NaN"])
def test_empty_answers_follow_an_explicit_policy(tmp_path, sample, value):
    pred = write_csv(tmp_path / "p.csv", ["id", "answer"], [("T1", "서울"), ("T2", value), ("T3", "부산")])
    out = tmp_path / "s.csv"
    with pytest.raises(KoqaError, match="p.csv: row 3: field 'answer': empty answer for id 'T2'.*--empty"):
        write_submission(str(pred), str(sample), str(out))
    assert not out.exists()
    report = write_submission(str(pred), str(sample), str(out), empty="fill", fill_text="모름")
    assert _read(out)[1] == ["T2", "모름"] and report["empty"] == 1 and report["empty_ids"] == ["T2"]
    report = write_submission(str(pred), str(sample), str(out), empty="keep")
    assert _read(out)[1] == ["T2", ""] and report["empty_policy"] == "keep"


def test_json_predictions_null_is_empty_and_other_types_fail(tmp_path, sample):
    pred = tmp_path / "p.json"
    pred.write_text('{"T1": "서울", "T2": null, "T3": "부산"}', encoding="utf-8")
    out = tmp_path / "s.csv"
    with pytest.raises(KoqaError, match="p.json: row id 'T2': field 'answer': empty answer for id 'T2'"):
        write_submission(str(pred), str(sample), str(out))
    write_submission(str(pred), str(sample), str(out), empty="fill", fill_text="모름")
    assert _read(out) == [["id", "answer"], ["T2", "모름"], ["T1", "서울"], ["T3", "부산"]]
    pred.write_text('{"T1": "서울", "T2": 1200, "T3": "부산"}', encoding="utf-8")
    with pytest.raises(KoqaError, match="p.json: field 'answer': the answer for id 'T2' is a JSON int, not a string"):
        write_submission(str(pred), str(sample), str(out))


def test_write_failure_leaves_previous_output(tmp_path, sample, monkeypatch):
    pred = write_csv(tmp_path / "p.csv", ["id", "answer"], [("T1", "a"), ("T2", "b"), ("T3", "c")])
    out = tmp_path / "s.csv"
    out.write_text("previous\n", encoding="utf-8")
    import os

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_submission(str(pred), str(sample), str(out))
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "s.csv", "sample_submission.csv"]
