"""The embedded demo dataset: short Korean economic-news-style passages with span answers.

Every passage is composed here from templates and fictional companies, people and figures
(no copied articles), so the data is the project's own and ships under its licence.  The files in
`data_tools/demo/` are the output of `python -m koqa.data_tools.demo_data --out data_tools/demo`;
the generator is seeded, so it always writes the same files.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from koqa.data_tools.morphemes import final_consonant

COMPANIES = [
    "한빛전자",
    "누리바이오",
    "대성건설",
    "미래식품",
    "서해해운",
    "하늘항공",
    "청솔제약",
    "동방화학",
    "새봄유통",
    "온누리은행",
    "가람자동차",
    "푸른에너지",
    "다온소프트",
    "태양중공업",
    "은하통신",
    "바른물산",
]
PEOPLE = ["김민준", "이서연", "박지훈", "최수아", "정도윤", "강하은", "조현우", "윤지민", "장서준", "임예린"]
REGIONS = [
    "경기도 평택",
    "충남 아산",
    "부산 강서구",
    "대구 달성군",
    "광주 광산구",
    "울산 울주군",
    "전북 새만금",
    "경북 구미",
    "충북 청주",
    "강원 원주",
]
PRODUCTS = [
    "전기차 배터리",
    "반도체 소재",
    "친환경 포장재",
    "가정간편식",
    "바이오 의약품",
    "해상 풍력 설비",
    "산업용 로봇",
    "스마트폰 부품",
    "수소 연료전지",
    "냉동 물류 설비",
]
SECTORS = ["반도체", "자동차", "조선", "바이오", "2차전지", "인터넷", "화학", "유통"]
JOB_SECTORS = ["보건복지업", "제조업", "정보통신업", "숙박음식점업", "운수창고업", "전문과학기술업"]
MONTHS = list(range(1, 13))


def _p(word: str, pair: str) -> str:
    """The word with the right particle form: pair is e.g. "은는", "이가", "을를" (after a final consonant first)."""
    return word + (pair[0] if final_consonant(word[-1]) else pair[1])


def _earnings(r: random.Random):
    c, p = r.choice(COMPANIES), r.choice(PRODUCTS)
    y, q, d = r.randint(2021, 2025), r.randint(1, 4), r.randint(1, 28)
    rev, pct, op = f"{r.randint(12, 980) * 10:,}", r.randint(3, 48), f"{r.randint(5, 240) * 10:,}"
    ctx = (
        f"{_p(c, '은는')} {y}년 {q}분기 매출이 {rev}억 원으로 전년 같은 기간보다 {pct}% 늘었다고 {d}일 밝혔다. "
        f"같은 기간 영업이익은 {op}억 원을 기록했다. 회사 측은 {p} 판매 호조가 실적 개선을 이끌었다고 설명했다."
    )
    return ctx, [
        (f"{c}의 {y}년 {q}분기 매출은 얼마인가?", f"{rev}억 원"),
        (f"{c}의 실적 개선을 이끈 제품은 무엇인가?", p),
        (f"{c}의 {q}분기 매출은 전년 같은 기간보다 몇 퍼센트 늘었나?", f"{pct}%"),
        (f"{_p(c, '이가')} {q}분기에 기록한 영업이익은?", f"{op}억 원"),
    ]


def _plant(r: random.Random):
    c, p, who, where = r.choice(COMPANIES), r.choice(PRODUCTS), r.choice(PEOPLE), r.choice(REGIONS)
    amount, year, d = f"{r.randint(3, 90) * 100:,}", r.randint(2026, 2030), r.randint(1, 28)
    cap, jobs = r.randint(2, 80) * 10, r.randint(15, 120) * 10
    ctx = (
        f"{_p(c, '이가')} {where}에 {amount}억 원을 투자해 {p} 공장을 짓는다. {c} {who} 대표는 {d}일 기자간담회에서 "
        f'"{year}년까지 공장을 완공해 연간 {cap}만 개를 생산하겠다"고 말했다. 새 공장에서는 약 {jobs}명이 일하게 된다.'
    )
    return ctx, [
        (f"{_p(c, '이가')} 새 공장을 짓는 지역은 어디인가?", where),
        (f"{c}의 {p} 공장 투자 금액은 얼마인가?", f"{amount}억 원"),
        (f"기자간담회에서 공장 완공 계획을 밝힌 {c} 대표는 누구인가?", who),
        (f"{_p(c, '이가')} 공장 완공 목표로 제시한 해는?", f"{year}년"),
        (f"{c}의 새 공장에서 일하게 될 인원은 약 몇 명인가?", f"{jobs}명"),
    ]


def _rate(r: random.Random):
    rate = f"{r.randint(10, 40) * 0.25:.2f}".rstrip("0").rstrip(".")
    action = r.choice(["인상", "인하", "동결"])
    infl, d, m = f"{r.randint(15, 45) / 10:.1f}", r.randint(1, 28), r.choice(MONTHS)
    ctx = (
        f"한국은행은 {d}일 금융통화위원회를 열고 기준금리를 연 {rate}%로 {action}했다. "
        f"소비자물가 상승률이 {infl}%를 기록한 점이 이번 결정에 영향을 미쳤다. "
        f"시장에서는 {m}월 회의에서 추가 조정이 있을 수 있다고 내다봤다."
    )
    return ctx, [
        ("한국은행이 정한 기준금리는 연 몇 퍼센트인가?", f"{rate}%"),
        ("이번 결정에 영향을 준 소비자물가 상승률은?", f"{infl}%"),
        ("시장에서 추가 조정 가능성을 내다본 회의는 몇 월인가?", f"{m}월"),
        ("기준금리를 결정한 회의의 이름은?", "금융통화위원회"),
    ]


def _exports(r: random.Random):
    m, p = r.choice(MONTHS), r.choice(PRODUCTS)
    exp, pct, bal = r.randint(450, 720), r.randint(2, 25), r.randint(5, 80)
    ctx = (
        f"산업통상자원부에 따르면 {m}월 수출액은 {exp}억 달러로 1년 전보다 {pct}% 증가했다. "
        f"품목별로는 {p} 수출이 가장 크게 늘었다. 수입이 줄면서 무역수지는 {bal}억 달러 흑자를 냈다."
    )
    return ctx, [
        (f"{m}월 수출액은 얼마인가?", f"{exp}억 달러"),
        (f"{m}월 수출이 가장 크게 늘어난 품목은?", p),
        (f"{m}월 무역수지 흑자 규모는?", f"{bal}억 달러"),
        ("수출 통계를 발표한 부처는 어디인가?", "산업통상자원부"),
    ]


def _merger(r: random.Random):
    c, c2 = r.sample(COMPANIES, 2)
    amount, share, d, m, p = (
        f"{r.randint(5, 150) * 100:,}",
        r.randint(30, 100),
        r.randint(1, 28),
        r.choice(MONTHS),
        r.choice(PRODUCTS),
    )
    ctx = (
        f"{_p(c, '이가')} {_p(c2, '을를')} {amount}억 원에 인수한다고 {d}일 공시했다. "
        f"인수 대상은 {c2} 지분 {share}%이며 "
        f"거래는 {m}월에 마무리될 예정이다. 이번 인수로 {_p(c, '은는')} {p} 시장에 본격적으로 진출하게 된다."
    )
    return ctx, [
        (f"{_p(c, '이가')} 인수하는 회사는 어디인가?", c2),
        (f"{c}의 {c2} 인수 금액은 얼마인가?", f"{amount}억 원"),
        (f"{_p(c, '이가')} 인수하는 {c2} 지분은 몇 퍼센트인가?", f"{share}%"),
        (f"인수를 통해 {_p(c, '이가')} 진출하는 시장은?", f"{p} 시장"),
    ]


def _jobs(r: random.Random):
    m, sector = r.choice(MONTHS), r.choice(JOB_SECTORS)
    num, inc, rate = f"{r.randint(2780, 2890):,}", r.randint(8, 45), f"{r.randint(25, 42) / 10:.1f}"
    ctx = (
        f"통계청이 발표한 {m}월 고용동향에 따르면 취업자 수는 {num}만 명으로 작년 같은 달보다 {inc}만 명 늘었다. "
        f"실업률은 {rate}%로 집계됐다. 산업별로는 {sector}에서 취업자가 가장 많이 증가했다."
    )
    return ctx, [
        (f"{m}월 취업자 수는 몇 명인가?", f"{num}만 명"),
        (f"{m}월 실업률은 얼마인가?", f"{rate}%"),
        (f"{m}월 취업자가 가장 많이 증가한 산업은?", sector),
        (f"{m}월 취업자 수는 작년 같은 달보다 얼마나 늘었나?", f"{inc}만 명"),
    ]


def _stocks(r: random.Random):
    d, sector = r.randint(1, 28), r.choice(SECTORS)
    pts, idx, amount = (
        f"{r.randint(5, 60)}.{r.randint(10, 99)}",
        f"{r.randint(2300, 3200):,}.{r.randint(10, 99)}",
        f"{r.randint(8, 95) * 100:,}",
    )
    ctx = (
        f"{d}일 코스피는 전 거래일보다 {pts}포인트 오른 {idx}에 거래를 마쳤다. 외국인 투자자가 "
        f"{amount}억 원어치를 순매수하며 지수 상승을 이끌었다. 업종별로는 {sector} 업종이 가장 많이 올랐다."
    )
    return ctx, [
        (f"{d}일 코스피 종가는?", idx),
        (f"{d}일 외국인 투자자의 순매수 규모는?", f"{amount}억 원어치"),
        (f"{d}일 가장 많이 오른 업종은?", sector),
        (f"{d}일 코스피는 전 거래일보다 몇 포인트 올랐나?", f"{pts}포인트"),
    ]


def _fund(r: random.Random):
    sector, amount, years, m = r.choice(SECTORS), f"{r.randint(5, 80) * 100:,}", r.randint(3, 7), r.choice(MONTHS)
    who = r.choice(PEOPLE)
    ctx = (
        f"기획재정부는 {sector} 분야 중소기업을 돕기 위해 {amount}억 원 규모의 정책 펀드를 만든다고 밝혔다. "
        f"지원 대상은 창업 {years}년 이내 기업이며 신청은 {m}월부터 받는다. "
        f'{who} 차관은 "유망 기업의 자금난을 덜겠다"고 말했다.'
    )
    return ctx, [
        ("기획재정부가 만드는 정책 펀드의 규모는?", f"{amount}억 원"),
        ("정책 펀드 지원 대상 기업의 조건은?", f"창업 {years}년 이내 기업"),
        (f"{sector} 정책 펀드 신청은 언제부터 받는가?", f"{m}월부터"),
        ("정책 펀드에 대해 발언한 차관은 누구인가?", who),
    ]


TEMPLATES = [_earnings, _plant, _rate, _exports, _merger, _jobs, _stocks, _fund]


def generate(n_contexts: int = 300, seed: int = 2024):
    r = random.Random(seed)
    rows = []
    for i in range(n_contexts):
        context, qas = TEMPLATES[i % len(TEMPLATES)](r)
        chosen = r.sample(qas, k=min(3, len(qas)))
        for j, (question, answer) in enumerate(chosen):
            assert answer in context, (answer, context)
            rows.append(
                {
                    "id": f"DEMO-{i:04d}-{j}",
                    "context": context,
                    "question": question,
                    "answer": answer,
                    "context_index": i,
                }
            )
    return rows


def write_demo(out_dir: str | Path, n_contexts: int = 300, test_share: float = 0.2, seed: int = 2024) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = generate(n_contexts, seed)
    cut = int(n_contexts * (1 - test_share))
    train = [row for row in rows if row["context_index"] < cut]
    test = [row for row in rows if row["context_index"] >= cut]
    with open(out / "train.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "context", "question", "answer"])
        writer.writerows([row["id"], row["context"], row["question"], row["answer"]] for row in train)
    with open(out / "test.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "context", "question"])
        writer.writerows([row["id"], row["context"], row["question"]] for row in test)
    with open(out / "sample_submission.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "answer"])
        writer.writerows([row["id"], ""] for row in test)
    with open(out / "test_answers.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "context", "question", "answer"])
        writer.writerows([row["id"], row["context"], row["question"], row["answer"]] for row in test)


def demo_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("koqa.data_tools"))) / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "demo"))
    parser.add_argument("--contexts", type=int, default=300)
    args = parser.parse_args()
    write_demo(args.out, args.contexts)


if __name__ == "__main__":
    main()
