"""Write files so that a reader never sees a half-written one: temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    On any error the temporary file is removed and `path` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty work folder beside `path`; when the block ends without an error it replaces
    `path` whole (whatever `path` held is removed). On any error the work folder is removed and `path`
    is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield work
        if path.exists():
            shutil.rmtree(path)
        os.replace(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> object:
    """What `write_json` wrote."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


class OutputFolder:
    """A command's output files, replaced as one unit: the folder holds either all of the last
    run's outputs or all of this run's, never a mix, and no stale output of an earlier run.

        with OutputFolder(out, ("predictions.csv", "metrics.json")) as folder:
            write_text(folder / "metrics.json", ...)

    Files are written into a staging folder beside `path`. When the block ends without an error,
    every output of an earlier run (the names in `outputs`) is moved aside, the new files are moved
    in, and the old ones are deleted; a failure on the way moves everything back. Other files in
    `path` (an answer log, say) are left alone. On an error in the block nothing in `path` changes.
    """

    def __init__(self, path: str | os.PathLike, outputs: Collection[str]):
        self.path, self.outputs = Path(path), frozenset(outputs)
        self.staging: Path | None = None

    def __enter__(self) -> OutputFolder:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=self.path.parent))
        return self

    def __truediv__(self, name: str) -> Path:
        if name not in self.outputs:
            raise ValueError(f"{name} is not one of this folder's outputs {sorted(self.outputs)}")
        return self.staging / name

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _commit(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        backup = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
        moved_out, moved_in = [], []
        try:
            for name in sorted(self.outputs):
                if (self.path / name).exists():
                    os.replace(self.path / name, backup / name)
                    moved_out.append(name)
            for name in sorted(p.name for p in self.staging.iterdir()):
                os.replace(self.staging / name, self.path / name)
                moved_in.append(name)
        except BaseException:
            for name in moved_in:  # undo: this run's files out, the earlier run's back
                os.replace(self.path / name, self.staging / name)
            for name in moved_out:
                os.replace(backup / name, self.path / name)
            shutil.rmtree(backup, ignore_errors=True)
            raise
        shutil.rmtree(backup, ignore_errors=True)
