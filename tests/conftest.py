"""Shared fixtures: the real default model (prepared once), a tiny random Gemma 3 with the real
tokenizer (fast enough to train in tests), and small Dacon-style files."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The KorQuAD 1.0 dev set beside the checkout; KOQA_KORQUAD names it when the checkout lies elsewhere.
KORQUAD = Path(
    os.environ.get("KOQA_KORQUAD") or REPO.parent / "shared" / "data" / "korquad-v1-dev" / "KorQuAD_v1.0_dev.json"
)

DACON_ROWS = [
    (
        "TRAIN_000",
        "한빛전자는 2024년 3분기 매출이 1,200억 원으로 전년보다 12% 늘었다고 밝혔다. "
        "회사는 반도체 소재 판매가 늘었다고 설명했다.",
        "한빛전자의 3분기 매출은 얼마인가?",
        "1,200억 원",
    ),
    (
        "TRAIN_001",
        "한빛전자는 2024년 3분기 매출이 1,200억 원으로 전년보다 12% 늘었다고 밝혔다. "
        "회사는 반도체 소재 판매가 늘었다고 설명했다.",
        "한빛전자의 매출 증가를 이끈 것은?",
        "반도체 소재",
    ),
    (
        "TRAIN_002",
        "한국은행은 기준금리를 연 3.25%로 동결했다. 물가 상승률은 2.4%였다.",
        "한국은행이 정한 기준금리는?",
        "3.25%",
    ),
    (
        "TRAIN_003",
        "누리바이오가 충남 아산에 500억 원을 투자해 공장을 짓는다. 김민준 대표는 2027년 완공을 목표로 한다고 말했다.",
        "누리바이오의 대표는 누구인가?",
        "김민준",
    ),
    (
        "TRAIN_004",
        "통계청에 따르면 10월 실업률은 2.8%로 집계됐다. 취업자는 보건복지업에서 가장 많이 늘었다.",
        "취업자가 가장 많이 늘어난 업종은?",
        "보건복지업",
    ),
    (
        "TRAIN_005",
        "코스피는 25.31포인트 오른 2,650.12에 마감했다. 외국인이 3,000억 원어치를 순매수했다.",
        "코스피 종가는?",
        "2,650.12",
    ),
]


# `koqa sft` flags that keep a training test on the tiny model small: short sequences, a row a step
TINY_TRAINING = [
    "--set",
    "max_length=256",
    "--set",
    "logging_steps=1",
    "--set",
    "validation_limit=0",
    "--set",
    "batch_size=2",
    "--set",
    "lora_r=4",
]


def sft_command(data, out, model, *extra, steps: int = 2, method: str = "lora") -> list[str]:
    """The `koqa sft` arguments of a training test on the tiny model: its data, run folder and model,
    `steps` steps, the flags that keep it small (TINY_TRAINING, with each method's own size setting),
    then `extra` (later flags win)."""
    small = TINY_TRAINING
    if method in ("prefix", "prompt"):  # no LoRA rank, a few virtual tokens instead
        small = [*TINY_TRAINING[:-2], "--set", "num_virtual_tokens=4"]
    command = ["sft", "--data", data, "--out", out, "--model", model, "--max-steps", steps, *small, *extra]
    if method != "lora":
        command[1:1] = ["--method", method]
    return [str(arg) for arg in command]


def write_weights(path: Path, content: bytes) -> Path:
    """A small but whole safetensors file whose bytes depend on `content` (a stand-in adapter's weights)."""
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.tensor(list(content), dtype=torch.uint8)}, str(path))
    return path


def default_sigint() -> None:
    """preexec_fn for a child the test sends SIGINT: a shell's background job starts with SIGINT
    ignored, which Python would keep, so the child gets the default disposition back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_csv(path: Path, header, rows, encoding="utf-8", delimiter=","):
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def korquad() -> Path:
    """The KorQuAD 1.0 dev JSON; tests that read it skip, with the reason, where a clone lacks it."""
    if not KORQUAD.is_file():
        pytest.skip(f"KorQuAD 1.0 dev set not found at {KORQUAD} (set KOQA_KORQUAD to its path)")
    return KORQUAD


@pytest.fixture
def dacon_train(tmp_path) -> Path:
    return write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], DACON_ROWS)


@pytest.fixture
def dacon_test(tmp_path) -> Path:
    return write_csv(tmp_path / "test.csv", ["id", "context", "question"], [r[:3] for r in DACON_ROWS])


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from koqa.model_store import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir) -> Path:
    """A 2-layer random Gemma 3 text model with the default model's real tokenizer (tiny_model.py)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"), default_model_dir)


@pytest.fixture(scope="session")
def tiny_default_home(tmp_path_factory, tiny_model_dir) -> Path:
    """A KOQA_HOME whose embedded default model is the tiny one: for scripts that name no model."""
    from tiny_model import as_default_model

    return as_default_model(tmp_path_factory.mktemp("koqa-home"), tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir) -> Path:
    """One `koqa sft` run on the tiny model (LoRA, two steps at a learning rate high enough to change
    its answers), trained once a session for the tests that only read a run: never write into it."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("tiny-run")
    data = write_csv(folder / "train.csv", ["id", "context", "question", "answer"], DACON_ROWS)
    command = sft_command(data, folder / "run", tiny_model_dir, "--set", "learning_rate=0.05")
    result = subprocess.run([sys.executable, "-m", "koqa.cli", *command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


class KiwiInProcess:
    """KiwiProcess's interface with the job run in this process on the shared analyser: for tests that
    run a command many times to test something other than the analyser's process (each KiwiProcess
    starts Python and loads kiwipiepy anew)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def submit(self, fn, *args):
        self._job = (fn, args)
        return self

    def result(self):
        fn, args = self._job
        return fn(*args)


@pytest.fixture
def kiwi_in_process(monkeypatch):
    """`koqa preprocess` and `koqa eval` analyse morphemes in this process (KiwiInProcess)."""
    monkeypatch.setattr("koqa.preprocess.KiwiProcess", KiwiInProcess)
    monkeypatch.setattr("koqa.eval.evaluate.KiwiProcess", KiwiInProcess)
