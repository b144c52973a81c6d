"""One shared kiwipiepy analyser (loading it takes about a second)."""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def kiwi():
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=max(1, min(4, os.cpu_count() or 1)))


# Sentence-final punctuation (SF) closes a sentence in Kiwi's tag set.
SENTENCE_FINAL = "SF"
# Josa: case markers (JK*), auxiliary particles (JX) and conjunctive particles (JC).
PARTICLE_PREFIX = "J"
