"""`koqa eval` settings: one dataclass, its fields the command's flags (see koqa/config.py)."""

from __future__ import annotations

from dataclasses import dataclass

from koqa.config import POSITIVE, columns_setting, encoding_setting, setting
from koqa.data_tools.normalize import DEFAULT_STEPS, STEPS
from koqa.eval.backends import BACKEND_CHOICES
from koqa.runs import CHECKPOINTS
from koqa.runtime import DTYPES
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
    batch_size: int = setting(16, help="transformers backend batch size", check=POSITIVE)
    max_length: int | None = setting(help="prompt token limit (default: the run's, else 1024)", check=POSITIVE)
    max_context_chars: int | None = setting(help="cut contexts to this many characters first", check=POSITIVE)
    max_new_tokens: int = setting(32, help="answer token limit", check=POSITIVE)
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
    chunk_size: int = setting(
        64,
        help="transformers backend: answers are saved after every chunk of this many questions; "
        "vLLM keeps every question in flight and saves answers as they finish",
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
        for key in ("tensor_parallel_size", "pipeline_parallel_size"):
            if getattr(self, key) > 1 and self.backend == "hf":
                found.append((key, f"{key} is a vLLM setting; the hf backend runs on one device"))
        if len(set(self.adapter)) != len(self.adapter):
            found.append(("adapter", "the same adapter is named twice (name each run once)"))
        return found
