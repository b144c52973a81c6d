import random

from koqa.data_tools.readers import read_squad_json
from koqa.data_tools.split import korquad_article_split, split_by_context


def test_split_never_shares_a_context_and_is_deterministic(korquad):
    records = read_squad_json(korquad).records[:1500]
    train, validation = split_by_context(records, 0.2, seed=3)
    assert not {r.context for r in train} & {r.context for r in validation}
    assert len(train) + len(validation) == len(records)
    assert abs(len(validation) - 300) < 40  # whole contexts, so close to, not exactly, 20%
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    _, validation_again = split_by_context(shuffled, 0.2, seed=3)
    assert {r.id for r in validation_again} == {r.id for r in validation}
    _, other_seed = split_by_context(records, 0.2, seed=4)
    assert {r.id for r in other_seed} != {r.id for r in validation}


def test_korquad_article_split_matches_the_notice(korquad):
    train, evaluation = korquad_article_split(read_squad_json(korquad).records)
    assert len(evaluation) == 1287 and len(train) == 4487
    assert {int(r.row[5 : r.row.index("]")]) % 5 for r in evaluation} == {0}
    assert not {r.context for r in train} & {r.context for r in evaluation}
