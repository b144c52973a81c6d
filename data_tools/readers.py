"""Readers for Dacon CSVs and SQuAD/KorQuAD JSON, all producing `QARecord`s.

Every problem is reported with the file, the row (CSV line number, or JSON path / question id)
and the field.  With ``on_bad_row="fail"`` (the default) the first bad row raises a
`KoqaError`; with ``"skip"`` bad rows are returned beside the good ones, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from koqa.data_tools.records import BadRow, QARecord, is_jsonl, read_jsonl_records
from koqa.errors import KoqaError

DACON_TRAIN_COLUMNS = ("id", "context", "question", "answer")
DACON_TEST_COLUMNS = ("id", "context", "question")
ON_BAD_ROW = ("fail", "skip")
FORMATS = ("auto", "dacon", "squad", "jsonl")


@dataclass
class ReadResult:
    records: list[QARecord] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    has_answers: bool = True


class _BadRowPolicy:
    def __init__(self, on_bad_row: str):
        if on_bad_row not in ON_BAD_ROW:
            raise KoqaError(f"on_bad_row must be one of {ON_BAD_ROW}, got '{on_bad_row}'")
        self.on_bad_row = on_bad_row
        self.bad: list[BadRow] = []

    def __call__(self, file: str, row: object, field_name: str, reason: str, fix: str | None = None):
        if self.on_bad_row == "fail":
            raise KoqaError(
                reason,
                file=file,
                row=row,
                field=field_name,
                fix=fix or "fix the row, or pass --on-bad-row skip to exclude it",
            )
        self.bad.append(BadRow(file, str(row), field_name, reason))


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a text file; BOM-prefixed UTF-8 is accepted, other encodings need `encoding`."""
    path = Path(path)
    if not path.is_file():
        raise KoqaError("file not found", file=str(path))
    raw = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise KoqaError(
            f"bytes at offset {exc.start} are not valid {encoding}",
            file=str(path),
            row=line,
            fix="if the file is CP949/EUC-KR, pass --encoding cp949",
        ) from None
    except LookupError:
        raise KoqaError(f"unknown encoding '{encoding}'", file=str(path)) from None


def _is_missing(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and (not value.strip() or value.strip().lower() == "nan"))
    )


def _parse_answer_field(value: str) -> list[str]:
    """An answer cell is plain text, or a JSON list of strings ("['a', 'b']" is parsed, never eval'd)."""
    text = value.strip()
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        for candidate in (text, text.replace("'", '"')):
            try:
                parsed = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, list) and parsed and all(isinstance(a, str) for a in parsed):
                return parsed
    return [value]


def read_csv_rows(path: Path, encoding: str, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict]]]:
    text = read_text(path, encoding)
    if not text.strip():
        raise KoqaError("file is empty", file=str(path), fix=f"expected a header {','.join(required)}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise KoqaError(f"not a readable CSV: {exc}", file=str(path), row=1) from None
    missing = [c for c in required if c not in header]
    if missing:
        first = ",".join(header)
        if len(header) == 1 and any(sep in first for sep in ("\t", ";", "|")):
            raise KoqaError(
                "the header is one column: wrong delimiter",
                file=str(path),
                row=1,
                fix="koqa reads comma-separated files; re-save it as CSV with commas",
            )
        raise KoqaError(
            f"missing column(s) {', '.join(missing)}; the header has {header}", file=str(path), row=1, field=missing[0]
        )
    rows = []
    line_no = previous_end = reader.line_num
    try:
        for values in reader:
            # a row is named by the line it starts on: a quoted field may span several lines
            line_no, previous_end = previous_end + 1, reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise KoqaError(
                    f"has {len(values)} fields, the header has {len(header)}",
                    file=str(path),
                    row=line_no,
                    fix="quote fields that contain commas or newlines",
                )
            rows.append((line_no, dict(zip(header, values))))
    except csv.Error as exc:
        raise KoqaError(f"not a readable CSV: {exc}", file=str(path), row=line_no) from None
    if not rows:
        raise KoqaError("has a header but no rows", file=str(path))
    return header, rows


def read_dacon_csv(
    path: str | Path,
    *,
    on_bad_row: str = "fail",
    encoding: str = "utf-8",
    require_answers: bool | None = None,
    check_span: bool = True,
) -> ReadResult:
    """Read a Dacon `train.csv` (with `answer`) or `test.csv` (without)."""
    path = Path(path)
    bad = _BadRowPolicy(on_bad_row)
    header, rows = read_csv_rows(path, encoding, DACON_TEST_COLUMNS)
    has_answers = "answer" in header
    if require_answers and not has_answers:
        raise KoqaError("missing column answer", file=str(path), row=1, field="answer")
    result = ReadResult(has_answers=has_answers)
    seen: dict[str, int] = {}
    file = str(path)
    for line_no, row in rows:
        fields = DACON_TRAIN_COLUMNS if has_answers else DACON_TEST_COLUMNS
        empty = next((f for f in fields if _is_missing(row.get(f))), None)
        if empty:
            bad(file, line_no, empty, "is empty, whitespace-only or NaN")
            continue
        rid = row["id"].strip()
        if rid in seen:
            bad(file, line_no, "id", f"duplicate id '{rid}' (first seen on row {seen[rid]})")
            continue
        seen[rid] = line_no
        context, question = row["context"], row["question"].strip()
        answers = _parse_answer_field(row["answer"]) if has_answers else []
        starts = [context.find(a) for a in answers]
        if has_answers and check_span and all(s < 0 for s in starts):
            bad(
                file,
                line_no,
                "answer",
                f"answer '{answers[0][:40]}' does not occur in the context",
                fix="correct the answer, or pass --on-bad-row skip",
            )
            continue
        result.records.append(
            QARecord(
                id=rid,
                context=context,
                question=question,
                answers=answers,
                answer_starts=starts,
                source=file,
                row=str(line_no),
            )
        )
    result.bad_rows = bad.bad
    return result


def read_squad_json(
    path: str | Path, *, on_bad_row: str = "fail", encoding: str = "utf-8", check_span: bool = True
) -> ReadResult:
    """Read SQuAD v1.1 / KorQuAD 1.0 JSON: data[].paragraphs[].qas[].answers[]."""
    path = Path(path)
    file = str(path)
    text = read_text(path, encoding)
    if not text.strip():
        raise KoqaError("file is empty", file=file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KoqaError(f"not valid JSON: {exc.msg}", file=file, row=f"line {exc.lineno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise KoqaError(
            "not SQuAD JSON: expected an object with a list 'data'",
            file=file,
            field="data",
            fix='SQuAD files look like {"data": [{"paragraphs": [...]}]}',
        )
    bad = _BadRowPolicy(on_bad_row)
    result = ReadResult()
    seen: dict[str, str] = {}
    any_answers = False
    for a_i, article in enumerate(doc["data"]):
        where_a = f"data[{a_i}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise KoqaError("not SQuAD JSON: expected a list 'paragraphs'", file=file, row=where_a, field="paragraphs")
        title = str(article.get("title", ""))
        for p_i, para in enumerate(article["paragraphs"]):
            where_p = f"{where_a}.paragraphs[{p_i}]"
            if (
                not isinstance(para, dict)
                or not isinstance(para.get("qas"), list)
                or not isinstance(para.get("context"), str)
            ):
                raise KoqaError(
                    "not SQuAD JSON: expected 'context' (text) and 'qas' (list)", file=file, row=where_p, field="qas"
                )
            context = para["context"]
            for q_i, qa in enumerate(para["qas"]):
                where = f"{where_p}.qas[{q_i}]"
                if not isinstance(qa, dict):
                    raise KoqaError("not SQuAD JSON: a question must be an object", file=file, row=where)
                rid = str(qa.get("id", "")).strip()
                row = f"{where} (id {rid})" if rid else where
                if not rid:
                    bad(file, row, "id", "is missing or empty")
                    continue
                if rid in seen:
                    bad(file, row, "id", f"duplicate id '{rid}' (first at {seen[rid]})")
                    continue
                seen[rid] = where
                if _is_missing(context):
                    bad(file, row, "context", "is empty")
                    continue
                if _is_missing(qa.get("question")):
                    bad(file, row, "question", "is missing or empty")
                    continue
                if not isinstance(qa["question"], str):
                    bad(file, row, "question", f"is a JSON {type(qa['question']).__name__}, not text")
                    continue
                raw_answers = qa.get("answers", [])
                if not isinstance(raw_answers, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("text"), str) for a in raw_answers
                ):
                    raise KoqaError(
                        "not SQuAD JSON: answers must be a list of {text, answer_start}",
                        file=file,
                        row=row,
                        field="answers",
                    )
                answers = [a["text"] for a in raw_answers]
                if raw_answers and any(_is_missing(a) for a in answers):
                    bad(file, row, "answers", "an answer text is empty")
                    continue
                starts = []
                for a in raw_answers:
                    start = a.get("answer_start", -1)
                    if not (isinstance(start, int) and context[start : start + len(a["text"])] == a["text"]):
                        start = context.find(a["text"])
                    starts.append(start)
                if answers and check_span and all(s < 0 for s in starts):
                    bad(file, row, "answers", f"answer '{answers[0][:40]}' does not occur in the context")
                    continue
                any_answers = any_answers or bool(answers)
                result.records.append(
                    QARecord(
                        id=rid,
                        context=context,
                        question=qa["question"].strip(),
                        answers=answers,
                        answer_starts=starts,
                        source=file,
                        row=where,
                        title=title,
                    )
                )
    result.has_answers = any_answers
    result.bad_rows = bad.bad
    return result


def detect_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "dacon"
    if suffix == ".json":
        return "squad"
    if suffix == ".jsonl":
        return "jsonl"
    raise KoqaError(
        f"cannot tell the format from the extension '{suffix}'",
        file=str(path),
        fix="pass --format dacon or --format squad",
    )


def read_records(
    path: str | Path, *, fmt: str = "auto", on_bad_row: str = "fail", encoding: str = "utf-8", check_span: bool = True
) -> ReadResult:
    """Read any supported file: Dacon CSV, SQuAD JSON, or a koqa-processed JSONL."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "dacon":
        return read_dacon_csv(path, on_bad_row=on_bad_row, encoding=encoding, check_span=check_span)
    if fmt == "squad":
        return read_squad_json(path, on_bad_row=on_bad_row, encoding=encoding, check_span=check_span)
    if fmt == "jsonl" or is_jsonl(path):
        records = read_jsonl_records(path)
        return ReadResult(records=records, has_answers=any(r.answers for r in records))
    raise KoqaError(f"unknown format '{fmt}'", file=str(path), fix="use auto, dacon or squad")


def read_predictions(path: str | Path, encoding: str = "utf-8") -> dict[str, str]:
    """Predictions: CSV with id,answer (or id,prediction), or SQuAD-style {id: answer} JSON."""
    return read_predictions_with_rows(path, encoding)[0]


def read_predictions_with_rows(path: str | Path, encoding: str = "utf-8") -> tuple[dict[str, str], dict[str, object]]:
    """`read_predictions` plus where each answer is: its CSV line number, or `id 'X'` in JSON.

    A JSON `null` answer reads as empty (the submission writer's empty-answer policy decides what
    happens to it); any other value that is not a string is an error naming its id.
    """
    path = Path(path)
    file = str(path)
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(read_text(path, encoding))
        except json.JSONDecodeError as exc:
            raise KoqaError(f"not valid JSON: {exc.msg}", file=file, row=f"line {exc.lineno}") from None
        if not isinstance(doc, dict):
            raise KoqaError(f"expected a JSON object {{id: answer}}, found a {type(doc).__name__}", file=file)
        preds: dict[str, str] = {}
        for key, value in doc.items():
            if value is not None and not isinstance(value, str):
                raise KoqaError(
                    f"the answer for id '{key}' is a JSON {type(value).__name__}, not a string",
                    file=file,
                    field="answer",
                    fix="write every answer as a string",
                )
            preds[str(key)] = value or ""
        return preds, {k: f"id '{k}'" for k in preds}
    header, rows = read_csv_rows(path, encoding, ("id",))
    column = "prediction" if "prediction" in header else "answer"
    if column not in header:
        raise KoqaError("missing column answer (or prediction)", file=file, row=1, field="answer")
    preds = {}
    where: dict[str, object] = {}
    for line_no, row in rows:
        rid = row["id"].strip()
        if rid in preds:
            raise KoqaError(f"duplicate id '{rid}' (also row {where[rid]})", file=file, row=line_no, field="id")
        preds[rid] = row[column]
        where[rid] = line_no
    return preds, where
