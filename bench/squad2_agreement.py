"""koqa's SQuAD 2.0 scores against the official SQuAD 2.0 evaluation script, on a hand-made set.

    python bench/squad2_agreement.py --official PATH/evaluate.py [--json bench/results/squad2_agreement.json]

PATH/evaluate.py is the official script as the `datasets` library kept it
(huggingface/datasets, metrics/squad_v2/evaluate.py: "Official evaluation script for SQuAD version
2.0", reading answers as {"text": [...]}). The hand-made set mixes answerable and unanswerable Korean
questions with exact, partial, multi-answer, punctuated, empty and wrong predictions. koqa's exact
match and token F1 (overall, HasAns, NoAns, as fractions) are compared with the script's (percent) and
must agree to 1e-9. The script also removes the English articles a/an/the and koqa also turns
KorQuAD's quote and bracket characters into spaces; the set holds neither, so both normalise alike.
Exits 1 when they disagree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONTEXT_A = "한빛전자는 2024년 3분기 매출이 1,200억 원으로 전년보다 12% 늘었다고 밝혔다. 반도체 소재 판매가 늘었다."
CONTEXT_B = "한국은행은 기준금리를 연 3.25%로 동결했다. 이창용 총재는 물가 상승률이 2.4%였다고 말했다."
# (id, context, question, gold answers: empty for an unanswerable question, prediction)
QUESTIONS = [
    ("a1", CONTEXT_A, "3분기 매출은?", ["1,200억 원"], "1,200억 원"),
    ("a2", CONTEXT_A, "증가율은?", ["12%"], "12% 늘었다"),
    ("a3", CONTEXT_A, "무엇이 늘었나?", ["반도체 소재 판매", "반도체 소재"], "소재 판매가"),
    ("a4", CONTEXT_A, "어느 분기인가?", ["3분기"], ""),
    ("a5", CONTEXT_A, "언제인가?", ["2024년 3분기"], "2024년"),
    ("a6", CONTEXT_B, "기준금리는?", ["연 3.25%", "3.25%"], "3.25%!"),
    ("a7", CONTEXT_B, "총재는 누구인가?", ["이창용"], "한국은행"),
    ("a8", CONTEXT_B, "물가 상승률은?", ["2.4%"], "물가 상승률이 2.4%였다고"),
    ("n1", CONTEXT_A, "대표이사는 누구인가?", [], ""),
    ("n2", CONTEXT_A, "영업이익은 얼마인가?", [], "1,200억 원"),
    ("n3", CONTEXT_B, "총재의 임기는?", [], "  "),
    ("n4", CONTEXT_B, "다음 회의는 언제인가?", [], "."),
]


def official_data(path: Path) -> None:
    """The set in the form the script reads (`datasets`' SQuAD 2.0: answers as {text, answer_start})."""
    paragraphs: dict[str, list] = {}
    for qid, context, question, golds, _ in QUESTIONS:
        answers = {"text": golds, "answer_start": [context.index(g) for g in golds]}
        paragraphs.setdefault(context, []).append({"id": qid, "question": question, "answers": answers})
    doc = {"data": [{"paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}]}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def squad2_file(path: Path) -> None:
    """The same set as a SQuAD 2.0 file (`is_impossible`), read by koqa's reader."""
    paragraphs: dict[str, list] = {}
    for qid, context, question, golds, _ in QUESTIONS:
        answers = [{"text": g, "answer_start": context.index(g)} for g in golds]
        qa = {"id": qid, "question": question, "answers": answers, "is_impossible": not golds}
        paragraphs.setdefault(context, []).append(qa)
    doc = {"version": "v2.0", "data": [{"paragraphs": [{"context": c, "qas": q} for c, q in paragraphs.items()]}]}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def koqa_scores(data: Path) -> dict[str, float]:
    from koqa.data_tools.readers import read_squad_json
    from koqa.eval.scoring import score_questions

    records = read_squad_json(data, check_span=False).records
    _, metrics = score_questions(records, {qid: pred for qid, *_, pred in QUESTIONS})
    out = {"exact": metrics["exact_match"], "f1": metrics["token_f1"], "total": metrics["n"]}
    for prefix, key in (("HasAns", "has_answer"), ("NoAns", "no_answer")):
        part = metrics[key]
        out.update(
            {f"{prefix}_exact": part["exact_match"], f"{prefix}_f1": part["token_f1"], f"{prefix}_total": part["n"]}
        )
    out["leaderboard_f1"] = metrics["f1"]
    return out


def official_scores(script: Path, folder: Path) -> dict[str, float]:
    official_data(folder / "data.json")
    (folder / "pred.json").write_text(json.dumps({q[0]: q[4] for q in QUESTIONS}, ensure_ascii=False), "utf-8")
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(folder / "data.json"),
            str(folder / "pred.json"),
            "-o",
            str(folder / "o.json"),
        ],
        check=True,
    )
    return json.loads((folder / "o.json").read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="the official SQuAD 2.0 evaluate.py")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        squad2_file(folder / "squad2.json")
        ours = koqa_scores(folder / "squad2.json")
        theirs = official_scores(args.official, folder)
    rows, worst = [], 0.0
    print(f"{'metric':<14} {'official':>20} {'koqa':>20} {'|difference|':>14}")
    for key, value in theirs.items():
        mine = ours[key] if key.endswith("total") else 100.0 * ours[key]
        diff = abs(mine - value)
        worst = max(worst, diff)
        rows.append({"metric": key, "official": value, "koqa": mine, "difference": diff})
        print(f"{key:<14} {value:>20.12f} {mine:>20.12f} {diff:>14.2e}")
    print(
        f"largest difference {worst:.2e} over {len(QUESTIONS)} questions; leaderboard F1 {ours['leaderboard_f1']:.6f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"questions": len(QUESTIONS), "rows": rows, "largest": worst}, indent=1))
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
