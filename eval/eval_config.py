"""`koqa eval` settings: one dataclass, its fields the command's flags (see koqa/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass

from koqa.data_tools.normalize import DEFAULT_STEPS, STEPS
from koqa.eval.backends import BACKEND_CHOICES
from koqa.runs import CHECKPOINTS
from koqa.runtime import DTYPES
from koqa.settings import POSITIVE, columns_setting, encoding_setting, setting
from koqa.trackers import missing_packages, report_to_setting

SPAN_MODES = ("off", "snap", "constrain")
KORQUAD_SPLITS = ("train", "eval")


@dataclass
class EvalConfig:
    data: str | None = setting(
        help="questions: Dacon CSV, SQuAD JSON, JSONL, parquet, Arrow, a datasets folder or hf:OWNER/NAME[:split]",
        required=True,
    )
    out: str | None = setting(help="output folder", required=True)
    adapter: list[str] = setting(
        [],
        append=True,
        help="a `koqa sft` run folder or adapter folder; name two or more for an ensemble "
        "(each answers, and where they differ the answer they find most likely "
        "together wins)",
    )
    checkpoint: str = setting(
        "best",
        help="of a run trained with eval_steps: the adapter of the best validation F1, or the final one",
        choices=CHECKPOINTS,
    )
    model: str | None = setting(
        help="local HF model folder or cached hub id (default: the adapter run's, else the embedded Gemma 3 270M)"
    )
    backend: str = setting("auto", help="generation backend", choices=BACKEND_CHOICES)
    batch_size: int | None = setting(help="transformers backend: questions a batch (default 16)", check=POSITIVE)
    max_length: int | None = setting(help="prompt token limit (default: the run's, else 1024)", check=POSITIVE)
    max_context_chars: int | None = setting(help="cut contexts to this many characters first", check=POSITIVE)
    max_new_tokens: int | None = setting(
        help="answer token limit (default: the adapter run's max_answer_tokens, else 32)", check=POSITIVE
    )
    no_answer: str | None = setting(help="the answer that means 'no answer' (default: the run's, else 답 없음)")
    template: str | None = setting(help="prompt template (default: the adapter run's, else ko_instruct)")
    span: str = setting(
        "off",
        help="answers as generated; snapped afterwards to the passage span closest to them; or "
        "constrained while generating to be a span of the passage",
        choices=SPAN_MODES,
    )
    answer_normalization: list[str] = setting(
        list(DEFAULT_STEPS),
        flag="--normalize",
        choices=tuple(STEPS),
        help="comma-separated answer post-processing steps",
    )
    limit: int | None = setting(help="only the first N questions", check=POSITIVE)
    korquad_split: str | None = setting(
        help="with the KorQuAD dev JSON: keep only the training or evaluation articles", choices=KORQUAD_SPLITS
    )
    morphemes: bool = setting(False, help="token F1 over kiwipiepy morphemes")
    encoding: str = encoding_setting()
    columns: list[str] = columns_setting()
    dtype: str = setting("auto", help="compute dtype; auto is bf16 where the CPU or GPU has it", choices=DTYPES)
    chunk_size: int | None = setting(
        help="transformers backend and ensembles: answers are saved after every chunk of this many questions "
        "(default 64); vLLM keeps every question in flight and saves answers as they finish",
        check=POSITIVE,
    )
    vllm_compile: bool = setting(False, help="torch.compile in the vLLM engine: faster generation, longer start-up")
    tensor_parallel_size: int = setting(
        1, help="vLLM: GPUs each layer is split over, for a model too large for one GPU", check=POSITIVE
    )
    pipeline_parallel_size: int = setting(1, help="vLLM: GPUs the layers are divided between", check=POSITIVE)

    report_to: list[str] = report_to_setting("the scores (into the adapter's training run where it used one)")

    def problems(self) -> list[tuple[str, str]]:
        found = missing_packages(self.report_to)
        if self.backend != "auto":
            found += backend_problems(self, self.backend)
        if len(set(self.adapter)) != len(self.adapter):
            found.append(("adapter", "the same adapter is named twice (name each run once)"))
        return found


DEFAULT_BATCH_SIZE = 16
DEFAULT_CHUNK_SIZE = 64
DEFAULT_MAX_NEW_TOKENS = 32


def backend_problems(config: EvalConfig, backend: str) -> list[tuple[str, str]]:
    """The settings `config` gives that `backend` would not honour, each (field, why): checked when the
    config is read for an explicit --backend, and again once `auto` has chosen one."""
    found = []
    if backend == "hf":
        for key in ("tensor_parallel_size", "pipeline_parallel_size"):
            if getattr(config, key) > 1:
                found.append((key, f"{key} is a vLLM setting; the transformers (hf) backend runs on one device"))
        if config.vllm_compile:
            found.append(("vllm_compile", "vllm_compile is a vLLM setting; the transformers (hf) backend has none"))
    if backend == "vllm":
        if config.batch_size is not None:
            found.append(("batch_size", "batch_size is a transformers (hf) setting; vLLM batches by itself"))
        if config.chunk_size is not None and len(config.adapter) < 2:
            found.append(
                (
                    "chunk_size",
                    "chunk_size is a transformers (hf) and ensemble setting; vLLM saves answers as they come",
                )
            )
    return found
