import pytest

from koqa.data_tools.records import QARecord
from koqa.eval.metrics import char_f1, exact_match, normalize_answer, score_one, token_f1
from koqa.eval.scoring import score_questions


def test_normalize_answer_follows_korquad():
    assert normalize_answer("《토지》") == "토지"
    assert normalize_answer("‘한강’의 (기적)") == "한강 의 기적"
    assert normalize_answer("U.S. Steel!") == "us steel"
    assert normalize_answer("  서울   특별시 ") == "서울 특별시"


def test_char_f1_hand_worked():
    # gold 서울특별시 (5 chars), prediction 서울 (2 chars): precision 1, recall 2/5 -> F1 = 2*1*0.4/1.4
    assert char_f1("서울", "서울특별시") == pytest.approx(0.8 / 1.4)
    # spaces never count: "1,200 억 원" vs "1,200억원" -> identical characters after punctuation removal
    assert char_f1("1,200 억 원", "1,200억원") == 1.0
    # repeated characters count as a multiset: 가가 vs 가 -> p=1/2, r=1 -> 2/3
    assert char_f1("가가", "가") == pytest.approx(2 / 3)
    assert char_f1("부산", "서울") == 0.0
    assert char_f1("", "서울") == 0.0


def test_exact_match_after_normalisation():
    assert exact_match("《토지》", "토지") == 1.0
    assert exact_match("서울에서", "서울") == 0.0


def test_token_f1_whitespace_and_morphemes():
    # whitespace tokens: "서울에서 열린" vs "서울" share nothing
    assert token_f1("서울에서 열린", "서울") == 0.0
    # morphemes: 서울/에서/열리/ㄴ vs 서울 share 서울 -> p=1/4, r=1 -> 0.4
    from koqa.eval.metrics import morpheme_tokens

    pred = morpheme_tokens("서울에서 열린")
    assert "서울" in pred
    expected = 2 * (1 / len(pred)) * 1 / ((1 / len(pred)) + 1)
    assert token_f1("서울에서 열린", "서울", morpheme_tokens) == pytest.approx(expected)


def test_best_gold_and_dataset_mean_with_unanswered():
    one = score_one("서울", ["부산", "서울"])
    assert one == {"f1": 1.0, "exact_match": 1.0, "token_f1": 1.0}
    gold = {"q1": ["서울"], "q2": ["부산광역시"], "q3": ["대구"]}
    preds = {"q1": "서울", "q2": "부산"}  # q3 unanswered: scores 0
    rows, metrics = score_questions([QARecord(i, "맥락", "질문", answers) for i, answers in gold.items()], preds)
    assert [row["f1"] for row in rows][2] == 0.0
    f1_q2 = 2 * 1 * 0.4 / 1.4
    assert metrics["f1"] == pytest.approx((1 + f1_q2 + 0) / 3)
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["n"] == 3


def test_decomposed_and_composed_hangul_score_the_same():
    import unicodedata

    gold = "김민준 대표"
    nfd = unicodedata.normalize("NFD", gold)
    assert nfd != gold and len(nfd) > len(gold)
    assert exact_match(gold, nfd) == exact_match(nfd, gold) == 1.0
    assert char_f1(gold, nfd) == 1.0
    # one syllable of three counted once, not as its two or three jamo
    assert char_f1(unicodedata.normalize("NFD", "김민"), "김민준") == pytest.approx(2 * (2 / 3) / (1 + 2 / 3))
    assert score_one(nfd, [gold])["f1"] == 1.0
