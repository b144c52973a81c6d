import pytest

from koqa.data_tools import normalize as n
from koqa.errors import KoqaError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("서울에서", "서울"),  # 에서: adverbial case particle after a proper noun
        ("서울에서는", "서울"),  # two particles in a row
        ("부산이", "부산"),  # subject marker
        ("조선의", "조선"),  # genitive
        ("미국으로부터", "미국"),  # compound particle
        ("세종대왕이", "세종대왕"),
        ("《토지》를", "《토지》"),  # particle after a closing bracket
    ],
)
def test_josa_strips_particles(text, expected):
    assert n.josa(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "고양이",  # 이 is part of the noun, not a particle
        "이순신",  # a name starting with 이
        "아이",  # interjection/noun, not noun + 이
        "가나",  # a verb form: 가(다) + 나; stripping 나 would be wrong
        "하나",
        "모두",
        "1,000원",  # a unit noun, not a particle
    ],
)
def test_josa_keeps_words_where_stripping_would_be_wrong(text):
    assert n.josa(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("《토지》", "토지"),
        ('"서울"', "서울"),
        ("‘한강의 기적’", "한강의 기적"),
        ("(주)삼성", "(주)삼성"),  # inner brackets stay
        ("삼성(", "삼성"),  # dangling opener at the end
        ("〈님의 침묵〉 (1926)", "〈님의 침묵〉 (1926)"),  # two groups: not one wrapping pair
    ],
)
def test_quotes_brackets(text, expected):
    assert n.quotes_brackets(text) == expected


@pytest.mark.parametrize(
    "text, expected", [("서울.", "서울"), ("3.14", "3.14"), ("1,000", "1,000"), ("…무엇?", "무엇")]
)
def test_special_chars(text, expected):
    assert n.special_chars(text) == expected


def test_whitespace_and_nfc():
    decomposed = "\u1112\u1161\u11ab\uae00"  # 한 as jamo + 글
    assert n.nfc(decomposed) == "한글"
    assert n.whitespace("  서울 \n 특별시\t") == "서울 특별시"


def test_steps_compose_in_order():
    normalize = n.build_normalizer(["nfc", "whitespace", "quotes_brackets", "josa", "quotes_brackets"])
    assert normalize(" 《토지》를 ") == "토지"


def test_unknown_step_is_a_clear_error():
    with pytest.raises(KoqaError, match="unknown answer normalisation step.*josa"):
        n.build_normalizer(["nfc", "jossa"])


def test_span_check():
    assert n.span_in_context("서울", "수도는 서울에서 열린다")
    assert not n.span_in_context("부산", "수도는 서울에서 열린다")
    assert not n.span_in_context("", "아무 글")
