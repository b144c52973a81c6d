"""One shared kiwipiepy analyser, and the Hangul facts around it.

Loading the analyser and its first analysis (which builds the rest of its model) take seconds;
`load_in_background` starts both on a thread of their own so that reading the input overlaps them,
and `Background` runs a long analysis on kiwipiepy's threads while the caller tokenizes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_LOCK = threading.Lock()
_SHARED: list = []


def kiwi():
    """The shared analyser, loaded and warmed up on first use (by whichever thread comes first)."""
    with _LOCK:
        if not _SHARED:
            from kiwipiepy import Kiwi

            analyser = Kiwi(num_workers=max(1, min(4, os.cpu_count() or 1)))
            analyser.tokenize("준비.")
            _SHARED.append(analyser)
        return _SHARED[0]


class Background(Generic[T]):
    """`fn(*args)` computed on a daemon thread; `result()` waits for it and raises what it raised.
    A daemon thread does not hold up the exit of a command that fails meanwhile."""

    def __init__(self, fn: Callable[..., T], *args):
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name=f"koqa-{fn.__name__}")
        self._thread.start()

    def _run(self, fn: Callable[..., T], args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as error:  # handed to the caller by result()
            self._error = error

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def load_in_background() -> Background:
    return Background(kiwi)


# Sentence-final punctuation (SF) closes a sentence in Kiwi's tag set.
SENTENCE_FINAL = "SF"
# Josa: case markers (JK*), auxiliary particles (JX) and conjunctive particles (JC).
PARTICLE_PREFIX = "J"


def final_consonant(char: str) -> int | None:
    """The final consonant (받침) of a Hangul syllable as its index in Unicode's order: 0 for none,
    4 for ㄴ, 8 for ㄹ, 18 for ㅄ, 20 for ㅆ...; None for a character that is not a Hangul syllable.
    It decides a particle's form (이/가, 을/를, 으로/로) and how a verb ending changes."""
    code = ord(char)
    return (code - 0xAC00) % 28 if 0xAC00 <= code <= 0xD7A3 else None
