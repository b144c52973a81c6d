"""report.html: one self-contained page per scored evaluation, to look at the answers.

The page holds its data as one JSON block (each passage once, the questions pointing at it), its
style and its script inline, and the F1 histogram as an inline PNG: it opens from disk with no
network. The script (eval/report_page.html) draws the summary and the filters, then the questions a
page at a time, each with its passage window and the gold and predicted spans marked. Every text
from the data reaches the page through `textContent`, never as markup, so a passage holding
`<script>` shows as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from koqa.atomic import write_text

PAGE = "report_page.html"
DATA_MARK = "/*KOQA_DATA*/"


def page_data(records: Sequence, rows: Sequence[dict], metrics: dict, settings: dict) -> dict:
    """What the page draws: the summary, and each question with an index into the passages."""
    by_id = {r.id: r for r in records}
    passages: dict[str, int] = {}
    items = []
    for row in rows:
        record = by_id[row["id"]]
        passage = passages.setdefault(record.context, len(passages))
        items.append(
            {
                "id": record.id,
                "q": record.question,
                "p": passage,
                "gold": list(record.answers),
                "starts": [int(s) for s in record.answer_starts],
                "pred": row["prediction"],
                "f1": round(row["f1"], 4),
                "em": row["em"],
                "error": row.get("error", ""),
                "qtype": row.get("question_type", ""),
                "atype": row.get("answer_type", ""),
            }
        )
    summary = {
        key: metrics[key]
        for key in ("n", "f1", "f1_ci95", "exact_match", "exact_match_ci95", "token_f1", "has_answer", "no_answer")
        if key in metrics
    }
    return {
        "summary": summary,
        "settings": {k: str(v) for k, v in settings.items()},
        "passages": list(passages),
        "items": items,
    }


def embed_json(data: dict) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' (so no '</script>'), no line separators
    that end a JavaScript string."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def render(data: dict, histogram: Path | None = None) -> str:
    """The whole page as one string."""
    if histogram is not None and histogram.is_file():
        data = {**data, "histogram": "data:image/png;base64," + base64.b64encode(histogram.read_bytes()).decode()}
    template = resources.files("koqa.eval").joinpath(PAGE).read_text(encoding="utf-8")
    return template.replace(DATA_MARK, embed_json(data), 1)


def write_html_report(
    path: Path, records: Sequence, rows: Sequence[dict], metrics: dict, settings: dict, histogram: Path | None
) -> None:
    write_text(path, render(page_data(records, rows, metrics, settings), histogram))
