"""The HTML pages to look at answers in: report.html (`koqa eval`, `koqa score --out`), compare.html
(`koqa compare --out`) and data.html (`koqa preprocess`).

Each page is one self-contained file drawn by the same template (eval/report_page.html): its data as
one JSON block (each passage once, the questions pointing at it), its style and script inline, the F1
histogram as an inline PNG, so it opens from disk with no network. The script draws the summary, the
filters (tags of each question), then the questions a page at a time, each with its passage window in
which the gold span and every prediction are marked. Every text of the data reaches the page through
`textContent`, never as markup, so a passage holding `<script>` shows as text.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from koqa.atomic import write_text

PAGE = "report_page.html"
DATA_MARK = "/*KOQA_DATA*/"
_DATA_BLOCK = re.compile(r'<script type="application/json" id="koqa-data">(.*?)</script>', re.S)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _interval(ci) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""


def answer_label(row: dict) -> str:
    """The answer's class as the page's filter names it: its error class, or that it is right."""
    return row.get("error") or ("exact match" if row.get("em") == 1 else "no answer expected")


class Passages:
    """Each passage text once; a question holds its index."""

    def __init__(self):
        self.index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        return self.index.setdefault(text, len(self.index))

    def texts(self) -> list[str]:
        return list(self.index)


def summary_lines(metrics: dict) -> list[dict]:
    lines = [
        {"label": "questions", "value": str(metrics["n"])},
        {"label": "leaderboard F1", "value": _pct(metrics["f1"]), "note": _interval(metrics.get("f1_ci95"))},
        {
            "label": "exact match",
            "value": _pct(metrics["exact_match"]),
            "note": _interval(metrics.get("exact_match_ci95")),
        },
    ]
    if "token_f1" in metrics:
        lines.append({"label": "token F1", "value": _pct(metrics["token_f1"])})
    for key, name in (("has_answer", "answerable (HasAns)"), ("no_answer", "unanswerable (NoAns)")):
        if key in metrics:
            part = metrics[key]
            lines.append(
                {
                    "label": name,
                    "value": f"F1 {_pct(part['f1'])}, EM {_pct(part['exact_match'])}",
                    "note": f"({part['n']} questions)",
                }
            )
    return lines


def eval_page(records: Sequence, rows: Sequence[dict], metrics: dict, settings: dict) -> dict:
    """report.html's data: the scores, and each question with its answer classified."""
    by_id = {r.id: r for r in records}
    passages = Passages()
    items = []
    for row in rows:
        record = by_id[row["id"]]
        label = answer_label(row)
        notes = [{"text": f"F1 {row['f1']:.2f}"}, {"text": f"EM {row['em']:g}"}]
        notes.append({"text": label, "cls": "error" if row.get("error") else "right"})
        notes += [{"text": row[k]} for k in ("question_type", "answer_type") if row.get(k)]
        items.append(
            {
                "id": record.id,
                "q": record.question,
                "p": passages(record.context),
                "gold": list(record.answers),
                "starts": [int(s) for s in record.answer_starts],
                "preds": [row["prediction"]],
                "f1": [round(row["f1"], 4)],
                "flag": bool(row.get("error")),
                "tags": {
                    "answer": [label],
                    "qtype": [row.get("question_type") or "other"],
                    "atype": [row.get("answer_type") or "other"],
                },
                "notes": notes,
            }
        )
    return {
        "kind": "eval",
        "title": "koqa eval report",
        "summary": summary_lines(metrics),
        "settings": {k: str(v) for k, v in settings.items()},
        "legend": [["gold", "gold answer"], ["p0", "prediction"], ["gold p0", "both"]],
        "filters": [
            {"key": "answer", "label": "answer"},
            {"key": "qtype", "label": "question type"},
            {"key": "atype", "label": "answer type"},
        ],
        "runs": ["prediction"],
        "passages": passages.texts(),
        "items": items,
    }


def read_page_data(page: Path) -> dict | None:
    """The data block of a page koqa wrote (None: no page there, or not one of koqa's)."""
    if not page.is_file():
        return None
    found = _DATA_BLOCK.search(page.read_text(encoding="utf-8", errors="replace"))
    try:
        data = json.loads(found.group(1)) if found else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("items"), list) else None


def compare_page(result: dict, runs: Sequence[str], tables: Sequence[dict], base_page: dict | None) -> dict:
    """compare.html's data: the paired table, then the questions whose answers differ between the runs,
    each tagged with how every later run did against the first. Passages and gold answers come from the
    first run's report.html where it has one."""
    names = [Path(run).name or str(run) for run in runs]
    known = {item["id"]: item for item in (base_page or {}).get("items", [])}
    old_passages = (base_page or {}).get("passages", [])
    passages = Passages()
    items = []
    for qid, base in tables[0].items():
        answers = [table[qid]["prediction"] for table in tables]
        if len(set(answers)) == 1:
            continue
        f1 = [round(table[qid]["f1"], 4) for table in tables]
        outcome = [
            f"{names[k]} {'better' if f1[k] > f1[0] else 'worse' if f1[k] < f1[0] else 'same F1'}"
            for k in range(1, len(tables))
        ]
        seen = known.get(qid, {})
        p = seen.get("p", -1)
        items.append(
            {
                "id": qid,
                "q": seen.get("q") or base.get("question") or "",
                "p": passages(old_passages[p]) if 0 <= p < len(old_passages) else -1,
                "gold": seen.get("gold", []),
                "starts": seen.get("starts", []),
                "preds": answers,
                "f1": f1,
                "flag": any(x < f1[0] for x in f1[1:]),
                "tags": {"outcome": outcome, "qtype": seen.get("tags", {}).get("qtype", ["other"])},
                "notes": [{"text": f"{name} F1 {x:.2f}"} for name, x in zip(names, f1)],
            }
        )
    columns = ["run", "F1", "ΔF1 [95%]", "p", "EM", "ΔEM [95%]", "answers differ", "better / worse"]
    rows = [[names[0], _pct(result["base"]["f1"]), "", "", _pct(result["base"]["exact_match"]), "", "", ""]]
    for name, row in zip(names[1:], result["runs"]):
        rows.append(
            [
                name,
                _pct(row["f1"]),
                f"{row['delta_f1'] * 100:+.2f} {_interval(row['delta_f1_ci95'])}",
                f"{row['delta_f1_p']:.3g}",
                _pct(row["exact_match"]),
                f"{row['delta_exact_match'] * 100:+.2f} {_interval(row['delta_exact_match_ci95'])}",
                str(row["answers_differ"]),
                f"{row['wins']} / {row['losses']}",
            ]
        )
    marks = [["gold", "gold answer"], *[[f"p{k}", name] for k, name in enumerate(names[:4])]]
    return {
        "kind": "compare",
        "title": "koqa compare",
        "summary": [
            {"label": "questions", "value": str(result["n"])},
            {"label": "answers differ", "value": str(len(items))},
        ],
        "table": {"columns": columns, "rows": rows},
        "settings": {"runs": ", ".join(map(str, runs)), "resamples": str(result["resamples"])},
        "legend": marks,
        "filters": [{"key": "outcome", "label": "against the first"}, {"key": "qtype", "label": "question type"}],
        "runs": names,
        "passages": passages.texts(),
        "items": items,
    }


def data_page(splits: dict[str, Sequence], stats: dict, rejected: Sequence) -> dict:
    """data.html's data: the statistics, the rejected rows, and every question with its answer marked
    in its passage, flagged where the answer occurs more than once (where a span may point at the wrong
    occurrence)."""
    passages = Passages()
    items = []
    for split, records in splits.items():
        for r in records:
            times = r.context.count(r.answers[0]) if r.answers else 0
            occurs = "unanswerable" if not r.answers else "once" if times == 1 else f"{times} times"
            items.append(
                {
                    "id": r.id,
                    "q": r.question,
                    "p": passages(r.context),
                    "gold": list(r.answers),
                    "starts": [int(s) for s in r.answer_starts],
                    "preds": [],
                    "f1": [],
                    "flag": times > 1,
                    "tags": {"split": [split], "occurs": [f"answer occurs {occurs}"]},
                    "notes": [
                        {"text": split},
                        {"text": f"answer occurs {occurs}", "cls": "error" if times > 1 else ""},
                    ],
                }
            )
    summary = [{"label": "questions", "value": str(len(items))}]
    summary += [{"label": f"{name} split", "value": str(n)} for name, n in (stats.get("splits") or {}).items()]
    summary.append({"label": "rejected rows", "value": str(len(rejected))})
    table = None
    if rejected:
        table = {
            "columns": ["file", "row", "field", "reason"],
            "rows": [[b.file, str(b.row), b.field, b.reason] for b in rejected],
        }
    return {
        "kind": "data",
        "title": "koqa preprocess: the data",
        "summary": summary,
        "table": table,
        "settings": {k: str(v) for k, v in stats.items() if isinstance(v, (str, int, float))},
        "legend": [["gold", "answer"]],
        "filters": [{"key": "split", "label": "split"}, {"key": "occurs", "label": "answer"}],
        "runs": [],
        "passages": passages.texts(),
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
    write_text(path, render(eval_page(records, rows, metrics, settings), histogram))
