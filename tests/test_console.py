"""The quiet command line (koqa/console.py): koqa's own lines on the terminal; the libraries' logging,
warnings and what child processes write to the descriptors go to OUT/koqa.log; -v shows them."""

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from koqa import console

KOQA_LINE = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING|ERROR) koqa[.:]")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    console._state.update(verbose=True, file=None)


def test_library_output_goes_to_the_log_file_and_koqa_lines_to_the_terminal(tmp_path, capfd, restore_logging):
    log_file = console.setup(False, tmp_path)
    logging.getLogger("transformers.modeling_utils").warning("a library warning")
    logging.getLogger("vllm.engine").info("a library banner")
    logging.getLogger("koqa.eval.pipeline").info("answered 6/6")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a FutureWarning from somewhere", FutureWarning, stacklevel=1)
    with console.quiet_descriptors():
        os.write(2, b"native output of a child process\n")
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child stderr\\n')"], check=True)
    terminal = capfd.readouterr().err
    assert "answered 6/6" in terminal
    for text in ("a library warning", "a library banner", "FutureWarning", "native output", "child stderr"):
        assert text not in terminal
        assert text in log_file.read_text(encoding="utf-8")


def test_an_error_of_a_library_still_reaches_the_terminal(tmp_path, capfd, restore_logging):
    console.setup(False, tmp_path)
    logging.getLogger("vllm").error("the engine died")
    assert "the engine died" in capfd.readouterr().err


def test_transformers_is_routed_when_imported_later_and_not_imported_by_setup(tmp_path):
    # a fresh interpreter: transformers must not be loaded yet (preprocess and score never need it)
    script = f"""
import sys
from koqa import console
log_file = console.setup(False, {str(tmp_path)!r})
assert "transformers" not in sys.modules, "setup imported transformers"
from transformers.utils import logging as hf_logging
assert hf_logging.__loader__.__class__.__name__ != "_ThenLoader"
hf_logging.get_logger("transformers.modeling_utils").warning("a late library warning")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "a late library warning" not in result.stderr
    assert "a late library warning" in (tmp_path / console.LOG_FILE).read_text(encoding="utf-8")


def test_verbose_shows_everything_and_writes_no_file(tmp_path, capfd, restore_logging):
    assert console.setup(True, tmp_path) is None
    logging.getLogger("transformers").warning("a library warning")
    with console.quiet_descriptors():
        os.write(2, b"native\n")
    err = capfd.readouterr().err
    assert "a library warning" in err and "native" in err
    assert not (tmp_path / console.LOG_FILE).exists()


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_koqa_eval_prints_only_its_own_lines(tmp_path, tiny_model_dir, dacon_train, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    out = tmp_path / "ev"
    args = ["eval", "--data", str(dacon_train), "--model", str(tiny_model_dir), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "koqa.cli", *args, "--backend", backend, "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stderr = [line for line in result.stderr.splitlines() if line.strip()]
    assert stderr and all(KOQA_LINE.match(line) for line in stderr), stderr
    stdout = result.stdout.splitlines()
    assert stdout[0].startswith("f1 ") and stdout[1].startswith(f"wrote {out}/predictions.csv"), stdout
    assert len(stdout) == 2
    assert (out / console.LOG_FILE).stat().st_size > 0  # what the libraries said is kept
