"""Training data: records read and checked, augmented where the config asks, rendered into tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from koqa.data_tools.readers import read_records
from koqa.data_tools.records import QARecord
from koqa.data_tools.tables import is_datasets_folder
from koqa.errors import KoqaError
from koqa.eval.pipeline import refuse_no_answer_golds

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    examples: list[dict]  # input_ids and completion_mask (and position_ids with shared contexts)
    excluded: list[dict]  # {id, reason} of the records that could not become an example
    questions: int  # records trained on, augmentation included
    validation: list[QARecord] = field(default_factory=list)
    augmentation: dict = field(default_factory=dict)  # what counterfactual / synthetic records were added

    @property
    def tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)


def read_training_records(config) -> tuple[list[QARecord], list[QARecord]]:
    """(training records, validation records) from --data (a file or a `koqa preprocess` folder)."""
    path, validation = Path(config.data), config.validation
    if path.is_dir() and not is_datasets_folder(path):
        train_file = path / "train.jsonl"
        if not train_file.is_file():
            raise KoqaError(
                "folder has no train.jsonl", file=str(path), fix="run `koqa preprocess` first, or pass a file"
            )
        found = path / "validation.jsonl"
        if not validation and found.is_file():
            if found.stat().st_size:
                validation = str(found)
            else:  # a split of one passage has nothing on its validation side
                log.info(
                    "%s is empty: training without validation questions (split more data, or pass --validation FILE)",
                    found,
                )
        path = train_file
    if str(config.data).startswith("hf:"):
        path = config.data
    read = {"on_bad_row": config.on_bad_row, "columns": config.columns, "encoding": config.encoding}
    result = read_records(path, fmt=config.data_format, **read)
    if not result.has_answers:
        raise KoqaError("training data has no answers", file=str(path), field="answer")
    for bad in result.bad_rows:
        log.warning("excluded %s", bad)
    val = read_records(validation, **read).records if validation else []
    return result.records, val


def augment(records: list[QARecord], config) -> tuple[list[QARecord], dict]:
    """The records plus the counterfactual copies and synthetic questions the config asks for."""
    original = len(records)
    added: dict = {}
    if config.counterfactual_copies:
        from koqa.data_tools.counterfactual import counterfactual_copies

        made = counterfactual_copies(records, config.counterfactual_copies, config.seed)
        log.info(
            "counterfactual copies: %d questions on %d passage copies; answer kept: %s; no copy: %s",
            len(made.records),
            made.passages,
            made.kept_answer or "none",
            made.left_out or "none",
        )
        added["counterfactual"] = {
            "original_questions": original,
            "questions": len(made.records),
            "passages": made.passages,
            "answer_kept": made.kept_answer,
            "no_copy": made.left_out,
        }
        records = records + made.records
    if config.synthetic_questions:
        from koqa.data_tools.synthetic_questions import synthetic_questions

        made = synthetic_questions(records[:original], config.synthetic_questions, config.seed)
        log.info(
            "synthetic questions: %d on %d passages (%d could be made)",
            len(made.records),
            made.passages,
            made.candidates,
        )
        added["synthetic"] = {
            "original_questions": original,
            "questions": len(made.records),
            "passages": made.passages,
            "candidates": made.candidates,
        }
        records = records + made.records
    return records, added


def training_prompts(records: list[QARecord], renderer) -> tuple[list[tuple], list[dict]]:
    """(record, rendered prompt, answer trained for) of each record whose answer stays in the context
    window kept around it, and the records excluded, with why."""
    kept, excluded = [], []
    for r in records:
        answer, start = renderer.target(r)
        prompt = renderer.render(r.context, r.question, answer_start=start, answer_len=len(answer))
        if not prompt.answer_in_window:
            excluded.append({"id": r.id, "reason": "answer not in the context window kept under max_length"})
            continue
        kept.append((r, prompt, answer))
    return kept, excluded


def build_examples(records: list[QARecord], renderer) -> tuple[list[dict], list[dict]]:
    """One tokenized example (input_ids, completion_mask) per record, and the records excluded, with why."""
    examples = []
    prompts, excluded = training_prompts(records, renderer)
    for _, prompt, answer in prompts:
        answer_ids = renderer.answer_ids(answer)
        examples.append(
            {"input_ids": prompt.ids + answer_ids, "completion_mask": [0] * len(prompt.ids) + [1] * len(answer_ids)}
        )
    return examples, excluded


def load_training_data(config, renderer) -> TrainingData:
    """Read, augment and render the training questions; refuse data of which nothing fits."""
    records, validation = read_training_records(config)
    refuse_no_answer_golds(records + validation, renderer.no_answer)
    records, added = augment(records, config)
    if config.shared_context:
        from koqa.shared_context import shared_context_examples

        examples, excluded = shared_context_examples(records, renderer, config.max_questions_per_context)
    else:
        examples, excluded = build_examples(records, renderer)
    if not examples:
        raise KoqaError("no training example fits max_length", file=config.data, fix="raise max_length")
    for item in excluded:
        log.warning("excluded %s: %s", item["id"], item["reason"])
    return TrainingData(examples, excluded, len(records) - len(excluded), validation, added)
