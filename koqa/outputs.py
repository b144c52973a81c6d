"""One rule for outputs, checked here for every command that writes: a command writes only inside its
`--out`, never removes a file it did not write, and refuses an `--out` that is, contains or lies
inside one of its inputs, or that holds another command's results (a training run of `koqa sft`).

Each command calls `check_out` with its inputs before it writes anything, and `inside` for every
folder it derives from a name it was given (a sweep's variants).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from koqa.errors import KoqaError

RUN_MARKER = "koqa_run.json"  # what `koqa sft` writes first into its run folder (koqa.runs.RunFolder)


def _local(path: str | Path | None) -> Path | None:
    """The resolved path of an output or an input on disk; None for an input that is not there (a hub
    id, a template or model given by name, unset)."""
    if path is None or str(path) == "" or str(path).startswith("hf:"):
        return None
    return Path(path).expanduser().resolve()


def _existing(path: str | Path | None) -> Path | None:
    local = _local(path)
    return local if local is not None and local.exists() else None


def _relation(out: Path, source: Path) -> str | None:
    if out == source:
        return "is"
    if source.is_relative_to(out):
        return "contains"
    if out.is_relative_to(source):
        return "lies inside"
    return None


def check_out(
    out: str | Path,
    inputs: Iterable[tuple[str, str | Path | None]],
    *,
    command: str,
    may_hold_a_run: bool = False,
    field: str = "out",
) -> None:
    """Refuse `out` (the command's output folder or file) where it overlaps an input, given as
    (setting name, path) pairs, or holds a `koqa sft` run that this command would write into."""
    target = _local(out)
    if target is None:
        return
    for name, given in inputs:
        source = _existing(given)
        if source is None:
            continue
        relation = _relation(target, source)
        if relation:
            raise KoqaError(
                f"--out {out} {relation} the {name} {given}: koqa {command} writes only inside its --out "
                "and never over what it reads",
                field=field,
                fix="choose an --out folder apart from the inputs",
            )
    if not may_hold_a_run and (target / RUN_MARKER).is_file():
        raise KoqaError(
            f"--out {out} holds a `koqa sft` run: koqa {command} would write into it",
            field=field,
            fix="choose another --out (e.g. a folder beside the run)",
        )


def inside(parent: str | Path, child: str | Path, what: str) -> Path:
    """`child` if it lies strictly inside `parent`; else a one-line error naming `what`."""
    base, path = Path(parent).resolve(), Path(child).resolve()
    if path == base or not path.is_relative_to(base):
        raise KoqaError(f"{what} '{child}' lies outside {parent}", field="out")
    return Path(child)


def own_output(out: str | Path, marker: str, what: str, command: str) -> Path:
    """`out` as a Path where it is absent, empty, or a folder `koqa {command}` wrote earlier (it holds
    `marker`, the one kind of --out the command replaces whole); else a one-line refusal."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not (path / marker).is_file():
        raise KoqaError(
            f"--out exists and is not {what}: koqa {command} replaces only its own output",
            file=str(path),
            field="out",
            fix="choose a new folder, or remove this one yourself",
        )
    return path
