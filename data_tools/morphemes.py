"""One shared kiwipiepy analyser, and the Hangul facts around it.

Loading the analyser and its first analysis (which builds the rest of its model) take seconds, and
kiwipiepy holds the GIL through both: on a thread they would stall whatever the caller does meanwhile.
`KiwiProcess` loads it in a process of its own, beside the caller's reading, tokenizer and plotting,
and runs one analysis there; `Background` runs a function on a thread (a long analysis of many texts
runs on kiwipiepy's own threads).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from koqa.errors import KoqaError

T = TypeVar("T")
_LOCK = threading.Lock()
_SHARED: list = []


def kiwi():
    """The shared analyser, loaded and warmed up on first use (by whichever thread comes first)."""
    with _LOCK:
        if not _SHARED:
            try:
                from kiwipiepy import Kiwi
            except ImportError as error:  # a dependency of koqa's: an install that lost it
                raise KoqaError(
                    f"kiwipiepy cannot be imported ({error}): koqa counts morphemes and classes answers with it",
                    fix="pip install 'kiwipiepy>=0.24,<0.25', or reinstall koqa",
                ) from None
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


class KiwiProcess(Generic[T]):
    """A Python process that loads the shared analyser as soon as it starts; `submit(fn, *args)` then
    calls `fn(*args)` there (a function importable from its module; arguments and result that pickle)
    and `result()` returns what it returned or raises what it raised. One job per process.

    A plain subprocess rather than multiprocessing's spawn, which would import the caller's main
    module again (a notebook-style script without a main guard would run twice). The process ends
    when its job is done, when the caller goes away (its input closes), or, as a context manager,
    when the block ends."""

    def __init__(self):
        self._errors = tempfile.TemporaryFile()  # a pipe nobody reads could fill up and stall it
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from koqa.data_tools.morphemes import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        self._sending: Background | None = None

    def __enter__(self) -> KiwiProcess[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the process now if it is still running (its result, if any, is dropped)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for handle in (self._process.stdin, self._process.stdout, self._errors):
            if handle is not None and not handle.closed:
                handle.close()

    def submit(self, fn: Callable[..., T], *args) -> KiwiProcess[T]:
        # written from a thread: the process reads it only once its start-up lets it
        self._sending = Background(self._send, pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))
        return self

    def _send(self, job: bytes) -> None:
        stdin = self._process.stdin
        try:
            stdin.write(job)
            stdin.close()
        except BrokenPipeError:  # it ended early; result() says how
            pass

    def result(self) -> T:
        if self._sending is not None:
            self._sending.result()
        with self._process.stdout as stdout:
            answer = stdout.read()
        code = self._process.wait()
        with self._errors as errors:
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip().splitlines()
        try:
            ok, value = pickle.loads(answer)
        except Exception:
            last = said[-1:] or ["no message"]
            raise RuntimeError(f"kiwipiepy's process ended without an answer (exit code {code}): {last[0]}") from None
        if not ok:
            raise value
        return value


def serve() -> None:
    """The body of a KiwiProcess: load the analyser on a thread while the job arrives on stdin, run
    it, write (True, result) or (False, the exception) to stdout, which nothing else writes to (what
    the job prints goes to stderr)."""
    load_in_background()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    job = sys.stdin.buffer.read()
    if not job:  # the caller went away before it submitted anything
        return
    fn, args = pickle.loads(job)
    try:
        answer = (True, fn(*args))
    except BaseException as error:  # handed to the caller by result()
        answer = (False, error)
    try:
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its type and message do
        data = pickle.dumps((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
    with answers:
        answers.write(data)


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
