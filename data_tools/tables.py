"""Rows of columnar data: parquet and Arrow files, `datasets` folders (`save_to_disk`) and hub datasets.

Each source yields ``(row label, {column: value})`` pairs that `koqa.data_tools.readers` turns into
records through the same checks as every other format. Arrow and parquet are read with pyarrow (the
storage under `datasets`); folders and hub ids go through the `datasets` library itself, hub ids from
its local cache when ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from koqa.errors import KoqaError

HUB_PREFIX = "hf:"
Rows = Iterator[tuple[str, dict]]


def is_hub_id(source: str) -> bool:
    return str(source).startswith(HUB_PREFIX)


# OWNER/NAME as the hub spells them, and a split name: a bare NAME would reach the `datasets` builders
# that read local files (csv, json, parquet...), and '..' a folder outside the working one
_HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SPLIT = re.compile(r"[A-Za-z0-9_.-]+")


def parse_hub_id(source: str) -> tuple[str, str | None]:
    """``hf:OWNER/NAME[:split]`` → (``OWNER/NAME``, split or None)."""
    spec = str(source)[len(HUB_PREFIX) :]
    name, _, split = spec.partition(":")
    parts = name.split("/")
    plain = len(parts) == 2 and all(_HUB_PART.fullmatch(p) and ".." not in p for p in parts)
    if not plain or (split and not _SPLIT.fullmatch(split)):
        raise KoqaError(
            f"'{source}' is not a hub dataset id",
            fix="write hf:OWNER/NAME or hf:OWNER/NAME:SPLIT, e.g. hf:KorQuAD/squad_kor_v1:validation",
        )
    return name, (split or None)


def _indexed(rows) -> Rows:
    for index, item in enumerate(rows):
        yield str(index), item  # named "row N" in messages, N as in dataset[N]


def parquet_rows(path: Path) -> Rows:
    import pyarrow
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise KoqaError(f"not a readable parquet file: {str(exc).splitlines()[0][:200]}", file=str(path)) from None
    return _indexed(table.to_pylist())


def arrow_rows(path: Path) -> Rows:
    """An Arrow IPC stream (what `datasets` writes) or an Arrow IPC/Feather file."""
    import pyarrow
    import pyarrow.ipc

    errors = []
    for opener in (pyarrow.ipc.open_stream, pyarrow.ipc.open_file):
        try:
            with pyarrow.memory_map(str(path)) as source:
                table = opener(source).read_all()
            return _indexed(table.to_pylist())
        except (pyarrow.ArrowException, OSError) as exc:
            errors.append(str(exc).splitlines()[0][:120])
    raise KoqaError(f"not a readable Arrow file: {errors[-1]}", file=str(path))


def _pick_split(splits: dict, split: str | None, file: str, how: str):
    """One split of a DatasetDict: the one named, or the only one there is."""
    names = list(splits)
    if split is None and len(names) == 1:
        return splits[names[0]]
    if split in splits:
        return splits[split]
    what = f"has no split '{split}'" if split else "holds several splits"
    raise KoqaError(f"{what} (it has {', '.join(names)})", file=file, fix=how)


def is_datasets_folder(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def folder_rows(path: Path, split: str | None = None) -> Rows:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    from datasets import DatasetDict, load_from_disk

    file = str(path)
    if not is_datasets_folder(path):
        raise KoqaError(
            "is a folder, but not one written by datasets' save_to_disk (no state.json or dataset_dict.json)",
            file=file,
            fix="pass a data file, or a folder that Dataset.save_to_disk wrote",
        )
    try:
        dataset = load_from_disk(file)
    # a malformed state.json or dataset_info.json (a list, wrong types) fails inside datasets in any of these
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise KoqaError(f"not a readable datasets folder: {str(exc).splitlines()[0][:200]}", file=file) from None
    if isinstance(dataset, DatasetDict):
        dataset = _pick_split(dataset, split, file, f"pass the split's own folder, e.g. {path / list(dataset)[0]}")
    return _indexed(dataset)


def _offline() -> bool:
    flags = (os.environ.get(name, "").lower() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def hub_rows(source: str) -> Rows:
    """A hub dataset, `hf:OWNER/NAME[:split]`: from the local cache offline, downloaded as usual online."""
    import datasets

    name, split = parse_hub_id(source)
    fetch = (
        f"on a connected machine run python -c \"import datasets; datasets.load_dataset('{name}')\", "
        "then copy its ~/.cache/huggingface here"
    )
    try:
        loaded = datasets.load_dataset(name, split=split)
    except (ConnectionError, FileNotFoundError) as exc:
        where = "in the local hub cache (offline)" if _offline() else "on the hub or in the local cache"
        reason = str(exc).splitlines()[0][:160]
        raise KoqaError(f"dataset '{name}' was not found {where}: {reason}", file=source, fix=fetch) from None
    except ValueError as exc:  # an unknown split
        raise KoqaError(str(exc).splitlines()[0][:200], file=source, fix="name a split: hf:OWNER/NAME:SPLIT") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(loaded, split, source, f"name a split: {HUB_PREFIX}{name}:{list(loaded)[0]}")
    return _indexed(loaded)
