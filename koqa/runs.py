"""The run folder: what `koqa sft` writes and `koqa eval`, `koqa merge` and the demo read.

One module owns the format, so that no stage re-derives where a file lives:

    RUN/config.yaml           the resolved settings of the run
    RUN/template.txt          the prompt template the adapter was trained with (eval renders it)
    RUN/koqa_run.json         `RunInfo`: base model, method, lengths, seed, versions, data counts
    RUN/log.jsonl             one JSON line per logging step (loss, learning rate, tokens/s, memory)
    RUN/loss_curve.png        the training loss
    RUN/metrics.json          the training summary (and validation F1 / EM)
    RUN/adapter/              the adapter (safetensors) and the tokenizer, at the end of training
    RUN/best/                 with eval_steps: the adapter of the best validation F1 so far, and
                              koqa_best.json (its step and scores); `koqa eval RUN` takes it
    RUN/f1_curve.png          with eval_steps: validation F1 and EM against the step
    RUN/checkpoints/          checkpoint-N folders, for --resume
    RUN/validation.jsonl      the validation questions, and RUN/validation/ their evaluation
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koqa.atomic import write_json, write_text
from koqa.errors import KoqaError
from koqa.prompting import NO_ANSWER

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """koqa_run.json: what a run was trained from, and what evaluating its adapter needs."""

    model: str | None  # as given (None: the embedded default)
    model_path: str  # the folder it resolved to
    method: str
    template: str  # the template's name
    max_length: int  # the prompt limit `koqa eval` uses for this adapter
    train_max_length: int
    seed: int
    train_examples: int
    train_questions: int
    train_tokens: int
    excluded: list[dict] = field(default_factory=list)
    template_file: str = "template.txt"
    versions: dict[str, str] = field(default_factory=dict)
    counterfactual: dict | None = None
    synthetic: dict | None = None
    best: dict | None = None  # with eval_steps: the step, F1 and EM of RUN/best/
    no_answer: str = NO_ANSWER  # what the adapter answers to an unanswerable question
    max_answer_tokens: int | None = None  # the answer token limit it was trained with; `koqa eval`'s default
    parent: dict | None = None  # koqa rl: the adapter it continued (folder, digest)

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if v is not None or k not in ("counterfactual", "synthetic", "best", "parent")
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class RunFolder:
    """Paths and reads/writes of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.yaml"
        self.template_file = self.path / "template.txt"
        self.info_file = self.path / "koqa_run.json"
        self.log_file = self.path / "log.jsonl"
        self.eval_answers_file = self.path / "eval_answers.jsonl"  # with eval_steps: each evaluation's answers
        self.loss_curve = self.path / "loss_curve.png"
        self.metrics_file = self.path / "metrics.json"
        self.adapter_dir = self.path / "adapter"
        self.best_dir = self.path / "best"
        self.f1_curve = self.path / "f1_curve.png"
        self.checkpoints_dir = self.path / "checkpoints"
        self.validation_file = self.path / "validation.jsonl"
        self.validation_dir = self.path / "validation"

    @classmethod
    def claim(cls, out: str | Path, inputs, *, command: str, resume: bool) -> RunFolder:
        """The run folder a training command (`command`) writes: refused where it overlaps one of its
        `inputs` ((setting, path) pairs) or already holds a run that is not being resumed."""
        from koqa.outputs import check_out

        check_out(out, inputs, command=command, may_hold_a_run=True)
        run = cls(out)
        if run.path.exists() and any(run.path.iterdir()) and not resume and run.holds_a_run():
            raise KoqaError(
                "run folder already holds a run", file=str(run), fix="pass --resume, or choose another --out"
            )
        return run

    def __str__(self) -> str:
        return str(self.path)

    def holds_a_run(self) -> bool:
        return self.checkpoints_dir.is_dir()

    def info(self) -> RunInfo | None:
        if not self.info_file.is_file():
            return None
        try:
            data = json.loads(self.info_file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            return RunInfo.from_json(data)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise KoqaError(f"is not a koqa run-info file ({reason})", file=str(self.info_file)) from None

    def saved_config(self) -> dict | None:
        import yaml

        if not self.config_file.is_file():
            return None
        return yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}

    def saved_template(self) -> str | None:
        return self.template_file.read_text(encoding="utf-8") if self.template_file.is_file() else None

    def write_start(self, settings: dict, template_text: str, info: RunInfo) -> None:
        """The files that describe the run, written before training starts."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config_file, yaml.safe_dump(settings, allow_unicode=True, sort_keys=False))
        write_text(self.template_file, template_text)
        write_json(self.info_file, info.to_json())

    def record_best(self, best: dict) -> None:
        info = self.info()
        if info is not None:
            info.best = best
            write_json(self.info_file, info.to_json())

    def last_complete_checkpoint(self) -> str | None:
        """The newest checkpoint whose trainer_state.json (written last) exists; half-written ones are removed."""
        if not self.checkpoints_dir.is_dir():
            return None
        found = sorted(
            (int(p.name.split("-")[-1]), p) for p in self.checkpoints_dir.glob("checkpoint-*") if p.is_dir()
        )
        complete = None
        for _, path in found:
            if (path / "trainer_state.json").is_file():
                complete = path
            else:
                log.warning("removing incomplete checkpoint %s", path)
                shutil.rmtree(path, ignore_errors=True)
        return str(complete) if complete else None

    def log_rows(self) -> list[dict]:
        if not self.log_file.is_file():
            return []
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines() if line.strip()]

    def append_log(self, row: dict) -> None:
        with open(self.log_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def append_evaluation(self, step: int, predictions: dict[str, str]) -> None:
        """One line of eval_answers.jsonl: the answers of the evaluation at `step` ({id: answer})."""
        with open(self.eval_answers_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "predictions": predictions}, ensure_ascii=False) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log rows a killed run wrote after the checkpoint it resumes from."""
        rows = [row for row in self.log_rows() if row.get("step", 0) <= step]
        write_text(self.log_file, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# PEFT's names of the adapter kinds whose weights are LoRA matrices: mergeable into the base model and
# served by vLLM (koqa.train.methods names each method's kind from these)
LORA_PEFT_TYPES = ("LORA",)


def adapter_config(adapter_dir: str | Path) -> dict:
    """An adapter folder's adapter_config.json, read once here for every caller: a missing, unreadable or
    malformed file is a one-line error naming it."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise KoqaError(
            "not an adapter folder: no adapter_config.json",
            file=str(adapter_dir),
            fix="pass the run folder written by `koqa sft` (or its adapter/ folder)",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise KoqaError(f"is not valid JSON ({type(exc).__name__})", file=str(path)) from None
    if not isinstance(data, dict):
        raise KoqaError(f"must hold a JSON object, not {type(data).__name__}", file=str(path))
    if not isinstance(data.get("peft_type"), str):
        raise KoqaError("has no peft_type", file=str(path), field="peft_type")
    return data


WEIGHTS_FILE = "adapter_model.safetensors"


def check_weights(adapter_dir: str | Path) -> None:
    """The adapter's safetensors file is whole: its header parses and its tensors end where the file
    does (a copy cut short or a damaged file is a one-line error, not the loader's traceback)."""
    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise KoqaError(f"no {WEIGHTS_FILE}: koqa reads adapter weights as safetensors only", file=str(adapter_dir))
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(length))
        ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
        if 8 + length + max(ends, default=0) != size:
            raise ValueError("tensors end elsewhere than the file")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise KoqaError(
            f"is not a whole safetensors file ({str(exc).splitlines()[0][:80] or type(exc).__name__})",
            file=str(path),
            fix="copy it again, or train the run again",
        ) from None


def peft_type(adapter_dir: str | Path) -> str:
    """PEFT's own name of an adapter's kind (LORA, PREFIX_TUNING, PROMPT_TUNING...)."""
    return adapter_config(adapter_dir)["peft_type"]


def is_lora(peft_type: str | None) -> bool:
    """Whether an adapter of this PEFT type has LoRA weights (None: no adapter at all)."""
    return peft_type in LORA_PEFT_TYPES


def lora_rank(adapter_dir: str | Path) -> int:
    """The rank `r` of a LoRA adapter."""
    rank = adapter_config(adapter_dir).get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise KoqaError(f"r must be a positive whole number, got {rank!r}", file=str(adapter_dir), field="r")
    return rank


@dataclass
class Adapter:
    """An adapter to evaluate or merge: its folder, and the run it belongs to where there is one."""

    dir: str
    run: RunFolder | None
    info: RunInfo | None

    @property
    def peft_type(self) -> str:
        return peft_type(self.dir)

    def template_path(self) -> Path | None:
        if self.run is None or self.info is None:
            return None
        path = self.run.path / self.info.template_file
        return path if path.is_file() else None


CHECKPOINTS = ("best", "final")


def refuse_broken_best(run: RunFolder) -> None:
    """A run whose best/ is there (or recorded) but incomplete: never the final adapter in its place."""
    info = run.info() if run.info_file.is_file() else None
    has_best = run.best_dir.is_dir() or bool(info and info.best)
    if has_best and not (run.best_dir / "adapter_config.json").is_file():
        raise KoqaError(
            "the run's best adapter is missing or incomplete (no best/adapter_config.json)",
            file=str(run.best_dir),
            fix="pass --checkpoint final for the adapter at the end of training, or train the run again",
        )


def locate_adapter(path: str | Path, checkpoint: str = "best") -> Adapter:
    """The adapter of a `koqa sft` run folder, or a bare adapter folder (inside a run or not). Of a
    run trained with eval_steps, `checkpoint` picks the best validation F1 (RUN/best/) or the end of
    training (RUN/adapter/); a run without best/ has only the final one."""
    p = Path(path)
    candidates = [(p / "adapter", p), (p, p.parent)]
    if checkpoint == "best":
        refuse_broken_best(RunFolder(p))
        candidates.insert(0, (p / "best", p))
    for adapter, run_dir in candidates:
        if (adapter / "adapter_config.json").is_file():
            adapter_config(adapter)  # malformed config or weights: refused here, before anything is written
            check_weights(adapter)
            run = RunFolder(run_dir)
            return Adapter(str(adapter), run, run.info())
    if (p / "koqa_run.json").is_file():  # a run stopped before it saved its adapter
        raise KoqaError(
            "this run has no adapter yet: its training stopped before the end",
            file=str(p),
            fix=f"finish it with the same koqa sft command and --resume (--out {p})",
        )
    raise KoqaError(
        "not a koqa run or adapter folder (no adapter_config.json)",
        file=str(p),
        fix="pass the --out folder of `koqa sft`",
    )


def adapter_digest(adapter_dir: str | Path, base_model: str) -> str:
    """The adapter's identity: its base model's folder and its weights' and config's bytes."""
    digest = hashlib.sha256(str(Path(base_model).resolve()).encode())
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with open(Path(adapter_dir) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
