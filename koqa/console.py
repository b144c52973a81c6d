"""What a command prints: koqa's own progress and result lines on the terminal; everything the
libraries under it say (warnings, banners, progress bars, the trainer's dict dumps, vLLM's engine
process) in `koqa.log` in the command's output folder, and on the terminal too with `-v`.

Three channels carry third-party output, and each is routed here: Python logging (every logger but
koqa's goes to the file), `warnings.warn` (captured into logging), and what child processes and C++
code write straight to the file descriptors (a vLLM engine process inherits descriptor 2 from the
moment it starts: `quiet_descriptors` points it at the log file while the engine starts).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from pathlib import Path

LOG_FILE = "koqa.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_state = {"verbose": True, "file": None, "new_dir": None}


def setup(verbose: bool, out_dir: str | Path | None) -> Path | None:
    """Route logging as above; returns the log file (None: no output folder, so the libraries' warnings
    stay on the terminal, and their informational lines are dropped)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    terminal.addFilter(_Redact())
    log_file = None
    if out_dir is not None and not verbose:
        log_file = Path(out_dir) / LOG_FILE
        to_file = _FileOnFirstRecord(log_file)
        to_file.setFormatter(logging.Formatter(FORMAT))
        to_file.addFilter(_Redact())
        root.addHandler(to_file)
    if not verbose:
        terminal.addFilter(_KoqaOrSerious(log_file is None))
        _quiet_libraries()
        if log_file is not None:
            _route_transformers_logging()
    root.addHandler(terminal)
    logging.captureWarnings(True)
    new_dir = Path(out_dir) if out_dir is not None and not Path(out_dir).exists() else None
    _state.update(verbose=verbose, file=log_file, new_dir=new_dir)
    return log_file


def forget_refused() -> None:
    """After a refusal: the output folder this command made, if it holds nothing but the log of the
    libraries' import-time lines, is removed again (a refused command leaves nothing behind)."""
    new_dir = _state.get("new_dir")
    if new_dir is None or not new_dir.is_dir():
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _FileOnFirstRecord):
            handler.close()
    entries = list(new_dir.iterdir())
    if all(entry.name == LOG_FILE and entry.is_file() for entry in entries):
        for entry in entries:
            entry.unlink()
        new_dir.rmdir()


class _Redact(logging.Filter):
    """Every record with its token-shaped parts redacted (koqa.errors.redact), its arguments merged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        from koqa.errors import redact

        record.msg, record.args = redact(record.getMessage()), None
        return True


class _FileOnFirstRecord(logging.FileHandler):
    """The log file, and its folder, made when the first record comes: a command refused before it
    does anything leaves no folder behind."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)


class _KoqaOrSerious(logging.Filter):
    """koqa's own records; of other loggers, errors (and warnings where there is no log file)."""

    def __init__(self, keep_warnings: bool):
        super().__init__()
        self.threshold = logging.WARNING if keep_warnings else logging.ERROR

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "koqa" or record.name.startswith("koqa.") or record.levelno >= self.threshold


def _quiet_libraries() -> None:
    """Progress bars and advisory banners of the Hugging Face libraries off (koqa logs its own progress)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's records then reach the handlers here
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banners; its warnings still reach the log


def _route_transformers_logging() -> None:
    """transformers logs through a handler of its own that writes to the terminal and does not pass
    records on; hand its records to the handlers here instead: now if transformers is loaded, else
    when it is (importing it is slow, and commands such as preprocess never need it)."""
    module = sys.modules.get(_HF_LOGGING)
    if module is not None:
        _propagate(module)
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_HF_LOGGING, _propagate))


_HF_LOGGING = "transformers.utils.logging"


def _propagate(hf_logging) -> None:
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` once the module named `name` has been imported."""

    def __init__(self, name: str, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one use; and the lookup below must not find this finder again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    def __init__(self, loader, then):
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader
        self.then(module)

    def __getattr__(self, name):  # get_source, get_data, is_package...: the wrapped loader's
        return getattr(self.loader, name)


def quiet() -> bool:
    return not _state["verbose"]


@contextlib.contextmanager
def quiet_descriptors():
    """While inside, file descriptors 1 and 2 write to the log file (child processes started here keep
    writing there); without a log file, or with -v, nothing changes."""
    log_file = _state["file"]
    if log_file is None or _state["verbose"]:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
