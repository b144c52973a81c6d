"""Deterministic train/validation split that never puts one context on both sides."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from koqa.data_tools.records import QARecord


def _key(context: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\u0000{context}".encode()).hexdigest()


def split_by_context(
    records: Sequence[QARecord], validation_fraction: float = 0.1, seed: int = 0
) -> tuple[list[QARecord], list[QARecord]]:
    """Group questions by context, order the groups by a seeded hash, and fill validation first.

    The same input, fraction and seed always give the same split, whatever the row order.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError("validation_fraction must be in [0, 1)")
    groups: OrderedDict[str, list[QARecord]] = OrderedDict()
    for record in records:
        groups.setdefault(record.context, []).append(record)
    target = round(validation_fraction * len(records))
    validation_contexts = set()
    taken = 0
    for context in sorted(groups, key=lambda c: _key(c, seed)):
        if taken >= target:
            break
        validation_contexts.add(context)
        taken += len(groups[context])
    train = [r for r in records if r.context not in validation_contexts]
    validation = [r for r in records if r.context in validation_contexts]
    return train, validation


def korquad_article_split(records: Sequence[QARecord]) -> tuple[list[QARecord], list[QARecord]]:
    """The benchmark split of the KorQuAD dev set: article index divisible by 5 is evaluation.

    Records carry their JSON path (`data[i]...`) in `row`; the article index is read from it.
    """
    train, evaluation = [], []
    for record in records:
        article = int(record.row.split("]")[0].removeprefix("data["))
        (evaluation if article % 5 == 0 else train).append(record)
    return train, evaluation
