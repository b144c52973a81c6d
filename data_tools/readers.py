"""Readers for Dacon CSVs, SQuAD/KorQuAD JSON and koqa's JSONL, all producing `QARecord`s.

Every row goes through `koqa.data_tools.validation.RecordChecker`, so every format keeps the same
invariants and names a problem by file, row (CSV line number, JSON path, JSONL line) and field.
With ``on_bad_row="fail"`` (the default) the first bad row raises a `KoqaError`; with ``"skip"``
bad rows are returned beside the good ones, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path

from koqa.data_tools.rows import add_rows, parse_answer_field, parse_columns
from koqa.data_tools.validation import ON_BAD_ROW, ReadResult, RecordChecker, text_problem
from koqa.errors import KoqaError

log = logging.getLogger(__name__)
__all__ = [
    "FORMATS",
    "ON_BAD_ROW",
    "parse_columns",
    "ReadResult",
    "read_records",
    "read_text",
    "read_csv_rows",
    "load_json",
    "parse_json",
]
DACON_TRAIN_COLUMNS = ("id", "context", "question", "answer")
DACON_TEST_COLUMNS = ("id", "context", "question")
# a CSV field may hold a whole passage; the csv module's default limit of 131,072 characters is not a rule of CSV
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


KOREAN_ENCODINGS = ("cp949", "euc_kr", "johab", "iso2022_kr")


def decode_korean(raw: bytes) -> str | None:
    """`raw` decoded as CP949 (the superset of EUC-KR that Windows writes), or None: charset-normalizer
    must name a Korean encoding and the strict decode must succeed."""
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None or best.encoding not in KOREAN_ENCODINGS:
        return None
    try:
        return raw.decode("cp949")
    except UnicodeDecodeError:
        return None


def _undecodable(path: Path, raw: bytes, exc: UnicodeDecodeError, what: str, fix: str) -> KoqaError:
    line = raw[: exc.start].count(b"\n") + 1
    return KoqaError(f"bytes at offset {exc.start} are not valid {what}", file=str(path), row=line, fix=fix)


def read_text(path: str | Path, encoding: str = "auto") -> str:
    """Read a text file. `auto`: UTF-8, with or without a BOM, else a Korean legacy encoding that is
    detected (CP949/EUC-KR, with a one-line notice); any other name forces that encoding."""
    path = Path(path)
    if not path.is_file():
        raise KoqaError("file not found", file=str(path))
    raw = path.read_bytes()
    if encoding == "auto":
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            text = decode_korean(raw)
            if text is None:
                raise _undecodable(
                    path, raw, exc, "UTF-8, nor CP949/EUC-KR", "pass --encoding NAME with the file's encoding"
                ) from None
            log.warning("%s is not UTF-8: read as cp949 (detected; --encoding NAME chooses another)", path)
            return text
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise _undecodable(
            path, raw, exc, encoding, "pass --encoding auto to detect a Korean encoding, or the file's own"
        ) from None
    except LookupError:
        raise KoqaError(f"unknown encoding '{encoding}'", file=str(path)) from None


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:
        raise ValueError(f"not usable JSON: the key '{repeated[:40]}' occurs twice in one object")
    return dict(pairs)


def parse_json(text: str) -> object:
    """JSON text parsed; ValueError saying why not (a syntax error, a key repeated in one object, nesting
    too deep for Python)."""
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:
        raise ValueError("not usable JSON: nested too deeply") from None


def load_json(text: str, file: str) -> object:
    try:
        return parse_json(text)
    except ValueError as exc:
        raise KoqaError(str(exc), file=file) from None


def read_csv_rows(
    path: Path, encoding: str, required: tuple[str, ...], checker: RecordChecker | None = None
) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line number, {column: value})]) of a CSV with the `required` columns. A blank row
    (no values, or only separators and spaces) is a bad row of `checker`, or an error without one."""
    file = str(path)
    text = read_text(path, encoding)
    if not text.strip():
        raise KoqaError("file is empty", file=file, fix=f"expected a header {','.join(required)}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise KoqaError(f"not a readable CSV: {exc}", file=file, row=1) from None
    repeated = next((h for h in header if h and header.count(h) > 1), None)
    if repeated is not None:
        raise KoqaError(f"the column '{repeated[:40]}' appears twice in the header", file=file, row=1, field=repeated)
    missing = [c for c in required if c not in header]
    if missing:
        if len(header) == 1 and any(sep in header[0] for sep in ("\t", ";", "|")):
            raise KoqaError(
                "the header is one column: wrong delimiter",
                file=file,
                row=1,
                fix="koqa reads comma-separated files; re-save it as CSV with commas",
            )
        # the header's own text is not repeated: a file passed by mistake may hold anything
        raise KoqaError(
            f"missing column(s) {', '.join(missing)} (the header has {len(header)} columns)",
            file=file,
            row=1,
            field=missing[0],
            fix=f"expected a header with {','.join(required)}",
        )
    rows = []
    line_no = previous_end = reader.line_num
    try:
        for values in reader:
            # a row is named by the line it starts on: a quoted field may span several lines
            line_no, previous_end = previous_end + 1, reader.line_num
            if not values or all(not v.strip() for v in values):
                if checker is None:
                    raise KoqaError("is a blank row", file=file, row=line_no, fix="remove it")
                checker.bad(line_no, "row", "is a blank row")
                continue
            if len(values) != len(header):
                raise KoqaError(
                    f"has {len(values)} fields, the header has {len(header)}",
                    file=file,
                    row=line_no,
                    fix="quote fields that contain commas or newlines",
                )
            rows.append((line_no, dict(zip(header, values))))
    except csv.Error as exc:
        raise KoqaError(f"not a readable CSV: {exc}", file=file, row=line_no) from None
    if not rows and (checker is None or not checker.result.bad_rows):
        raise KoqaError("has a header but no rows", file=file)
    return header, rows


def read_dacon_csv(
    path: str | Path,
    *,
    on_bad_row: str = "fail",
    encoding: str = "auto",
    check_span: bool = True,
    columns: dict[str, str] | None = None,
) -> ReadResult:
    """Read a Dacon `train.csv` (with `answer`) or `test.csv` (without); `columns` renames them."""
    name = {"id": "id", "context": "context", "question": "question", "answers": "answer", "title": "title"}
    name.update(columns or {})
    checker = RecordChecker(str(path), on_bad_row, check_span)
    header, rows = read_csv_rows(Path(path), encoding, tuple(name[f] for f in DACON_TEST_COLUMNS), checker)
    answer = name["answers"]
    has_answers = answer in header
    checker.unread_columns = [c for c in header if c not in name.values()]
    for line_no, row in rows:
        if has_answers and text_problem(row[answer]):
            checker.bad(line_no, answer, text_problem(row[answer]))
            continue
        checker.add(
            line_no,
            id=row[name["id"]],
            context=row[name["context"]],
            question=row[name["question"]],
            answers=parse_answer_field(row[answer]) if has_answers else [],
            title=row.get(name["title"], ""),
            answers_field=answer,
        )
    return checker.finish()


def _squad_shape_error(file: str, row: str, what: str, field: str | None = None) -> KoqaError:
    return KoqaError(
        f"not SQuAD JSON: {what}",
        file=file,
        row=row,
        field=field,
        fix='SQuAD files look like {"data": [{"paragraphs": [{"context": ..., "qas": [...]}]}]}',
    )


def read_squad_json(
    path: str | Path, *, on_bad_row: str = "fail", encoding: str = "auto", check_span: bool = True
) -> ReadResult:
    """Read SQuAD / KorQuAD JSON: data[].paragraphs[].qas[].answers[]; SQuAD 2.0's `is_impossible: true`
    makes an unanswerable question (its `plausible_answers` are not answers)."""
    file = str(path)
    text = read_text(path, encoding)
    if not text.strip():
        raise KoqaError("file is empty", file=file)
    doc = load_json(text, file)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise _squad_shape_error(file, None, "expected an object with a list 'data'", "data")
    checker = RecordChecker(file, on_bad_row, check_span)
    for a_i, article in enumerate(doc["data"]):
        where_a = f"data[{a_i}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise _squad_shape_error(file, where_a, "expected a list 'paragraphs'", "paragraphs")
        title = article.get("title") if isinstance(article.get("title"), str) else ""
        for p_i, para in enumerate(article["paragraphs"]):
            where_p = f"{where_a}.paragraphs[{p_i}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise _squad_shape_error(file, where_p, "expected 'context' and a list 'qas'", "qas")
            for q_i, qa in enumerate(para["qas"]):
                where = f"{where_p}.qas[{q_i}]"
                if not isinstance(qa, dict):
                    raise _squad_shape_error(file, where, "a question must be an object")
                raw = qa.get("answers", [])
                if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
                    checker.bad(where, "answers", "not SQuAD JSON: answers must be a list of {text, answer_start}")
                    continue
                rid = qa.get("id")
                row = f"{where} (id {rid.strip()[:40]})" if isinstance(rid, str) and rid.strip() else where
                checker.add(
                    row,
                    id=rid,
                    context=para.get("context"),
                    question=qa.get("question"),
                    title=title,
                    answers=[a.get("text") for a in raw],
                    answer_starts=[a.get("answer_start") for a in raw],
                    unanswerable=qa.get("is_impossible", False),
                )
    return checker.finish()


def _jsonl_rows(text: str, checker: RecordChecker):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = parse_json(line)
        except ValueError as exc:
            checker.bad(f"line {number}", "line", str(exc))
            continue
        if isinstance(item, dict):
            yield f"line {number}", item
        else:
            checker.bad(f"line {number}", "line", f"is a JSON {type(item).__name__}, not an object")


def read_jsonl(
    path: str | Path,
    *,
    on_bad_row: str = "fail",
    encoding: str = "auto",
    check_span: bool = True,
    columns: dict[str, str] | None = None,
) -> ReadResult:
    """Read JSONL: one JSON object per line with id, context, question and answers (empty or absent for
    test data), as `koqa preprocess` writes it or as `datasets` exports SQuAD-style sets."""
    file = str(path)
    text = read_text(path, encoding)
    if not text.strip():
        raise KoqaError("file is empty", file=file)
    checker = RecordChecker(file, on_bad_row, check_span)
    return add_rows(checker, _jsonl_rows(text, checker), columns)


def read_table(
    path: str | Path,
    *,
    fmt: str,
    on_bad_row: str = "fail",
    check_span: bool = True,
    columns: dict[str, str] | None = None,
) -> ReadResult:
    """Read a parquet or Arrow file, a `datasets` folder or a hub dataset (`hf:OWNER/NAME[:split]`)."""
    from koqa.data_tools import tables

    source = str(path)
    if fmt == "hf" and tables.is_hub_id(source):
        rows = tables.hub_rows(source)
    else:
        path = Path(path)
        if not path.exists():
            raise KoqaError("file not found", file=source)
        readers = {"parquet": tables.parquet_rows, "arrow": tables.arrow_rows, "hf": tables.folder_rows}
        rows = readers[fmt](path)
    return add_rows(RecordChecker(source, on_bad_row, check_span), rows, columns)


TABLE_FORMATS = ("parquet", "arrow", "hf")
FORMATS = ("auto", "dacon", "squad", "jsonl", *TABLE_FORMATS)
SUFFIXES = {".csv": "dacon", ".json": "squad", ".jsonl": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}


def detect_format(path: str | Path) -> str:
    """The format of a source: `hf:` ids and folders are `datasets` data, files go by their extension."""
    from koqa.data_tools.tables import is_hub_id

    if is_hub_id(str(path)) or Path(path).is_dir():
        return "hf"
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise KoqaError(
            f"cannot tell the format from the extension '{suffix}'",
            file=str(path),
            fix=f"pass --format with one of {', '.join(FORMATS[1:])}",
        )
    return SUFFIXES[suffix]


def read_records(
    path: str | Path,
    *,
    fmt: str = "auto",
    on_bad_row: str = "fail",
    encoding: str = "auto",
    check_span: bool = True,
    columns: list[str] | dict[str, str] | None = None,
) -> ReadResult:
    """Read any supported source: Dacon CSV, SQuAD JSON, JSONL, parquet, Arrow, a `datasets` folder or
    a hub dataset (`hf:OWNER/NAME[:split]`); `columns` maps koqa's field names to the source's."""
    mapping = parse_columns(columns)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise KoqaError(f"unknown format '{fmt}'", file=str(path), fix=f"use one of {', '.join(FORMATS)}")
    if fmt in TABLE_FORMATS:
        if encoding != "auto":
            raise KoqaError(
                f"--encoding does not apply to {fmt} data (its text is stored as UTF-8)",
                file=str(path),
                field="encoding",
                fix="leave --encoding at auto",
            )
        return read_table(path, fmt=fmt, on_bad_row=on_bad_row, check_span=check_span, columns=mapping)
    if fmt == "squad" and mapping:
        raise KoqaError("--columns does not apply to SQuAD JSON (its keys are fixed)", file=str(path), field="columns")
    readers = {"dacon": read_dacon_csv, "squad": read_squad_json, "jsonl": read_jsonl}
    extra = {} if fmt == "squad" else {"columns": mapping}
    return readers[fmt](path, on_bad_row=on_bad_row, encoding=encoding, check_span=check_span, **extra)
