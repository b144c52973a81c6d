"""koqa from Python, for notebooks (Colab, Kaggle, Jupyter): the stages with the same settings as the
commands, returning objects that hold their paths and metrics and give their tables as pandas
DataFrames.

    from koqa import api as kq

    data = kq.preprocess("train.csv", out="runs/data")
    run = kq.train(data=data, out="runs/lora", max_steps=40)
    val = kq.evaluate(data=data.validation, adapter=run, out="runs/val")
    val.metrics["f1"], val.predictions().head(), val.errors()
    kq.compare(val, other).table()

(They live in `koqa.api`, not on `koqa` itself: `koqa.preprocess` and `koqa.train` are the stages'
modules.)
In a script (not a notebook) keep the calls under `if __name__ == "__main__":`: vLLM starts its engine
in a spawned process, which imports the main script again.

Settings are keyword arguments named as in the config files (`max_steps`, `learning_rate`, ...), plus
`config=` for a config file; they are checked exactly as the command line checks them (a wrong one
raises `KoqaError` naming it). Anything that holds a path (a result of another stage, a
`pathlib.Path`) is taken where a path is expected. Evaluation shows its progress as a bar (a
notebook widget in Jupyter, through `tqdm.auto`); training shows the trainer's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koqa.errors import KoqaError

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def _settings(cls, config, settings: dict[str, Any]):
    from koqa.settings import load

    plain = {k: _as_setting(v) for k, v in settings.items() if v is not None}
    config_file = _as_setting(config) if config else None
    if config_file and Path(str(config_file)).suffix.lower() not in CONFIG_SUFFIXES:
        # evaluate("small.csv"): the first argument is the settings file, the data is a keyword
        raise KoqaError(
            "is not a config file (.yaml, .toml or .json): the first argument names the settings file",
            file=str(config_file),
            field="config",
            fix=f"pass data with data={str(config_file)!r}",
        )
    return load(cls, config_file=config_file, flags=plain)


def _as_setting(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_setting(v) for v in value]
    if isinstance(value, (Path, os.PathLike)) or hasattr(value, "path"):
        return str(getattr(value, "path", value))
    return value


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(rows)


@dataclass
class Prepared:
    """What `preprocess` wrote: the folder, its statistics, and the split files."""

    path: Path
    stats: dict

    @property
    def train(self) -> Path:
        return self.path / "train.jsonl"

    @property
    def validation(self) -> Path:
        return self.path / "validation.jsonl"

    def records(self, split: str = "train"):
        """The records of one split (train, validation, all) as a DataFrame."""
        import pandas as pd

        return pd.read_json(self.path / f"{split}.jsonl", lines=True, dtype=False)

    def statistics(self):
        """Length, token and morpheme distributions: a row per measure, a column per statistic."""
        return _frame(self.stats.get("distributions", {})).T


@dataclass
class Run:
    """A `koqa sft` run folder: its summary, its log, its adapters."""

    path: Path
    metrics: dict

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def best(self) -> dict | None:
        return self.metrics.get("best")

    def log(self):
        """log.jsonl as a DataFrame: a row per logging step (and per evaluation with eval_steps)."""
        from koqa.runs import RunFolder

        return _frame(RunFolder(self.path).log_rows())


@dataclass
class Evaluation:
    """A `koqa eval` folder: its metrics, and its predictions, errors and breakdowns as tables."""

    path: Path
    metrics: dict

    def predictions(self):
        import pandas as pd

        return pd.read_csv(self.path / "predictions.csv", dtype={"id": str}, keep_default_na=False)

    def errors(self):
        """Every answer that is not an exact match, with its error class, question and answer type."""
        import pandas as pd

        return pd.read_csv(self.path / "errors.csv", dtype={"id": str}, keep_default_na=False)

    def by_question_type(self):
        return _frame(self.metrics.get("by_question_type", {})).T

    def by_answer_type(self):
        return _frame(self.metrics.get("by_answer_type", {})).T

    def show(self) -> Evaluation:
        """The answers as report.html draws them, inline in a notebook (the last line of a cell)."""
        return self

    def _repr_html_(self) -> str | None:
        """report.html itself, in a frame of its own, so that its style and script stay out of the notebook's."""
        from html import escape

        page = self.path / "report.html"
        if not page.is_file():  # test data without gold answers: nothing scored to look at
            return None
        srcdoc = escape(page.read_text(encoding="utf-8"), quote=True)
        return f'<iframe srcdoc="{srcdoc}" style="width: 100%; height: 760px; border: 0"></iframe>'


@dataclass
class Table:
    """A comparison or a sweep: its rows as a DataFrame, and its Markdown."""

    rows: list[dict]
    markdown: str
    result: dict = field(default_factory=dict)

    def table(self):
        return _frame(self.rows)

    def _repr_markdown_(self) -> str:  # shown as a table in Jupyter
        return self.markdown


def preprocess(*inputs, config=None, **settings) -> Prepared:
    """`koqa preprocess INPUT... --out DIR`."""
    from koqa.preprocess import PreprocessConfig
    from koqa.preprocess import preprocess as run

    if inputs:
        settings["inputs"] = list(inputs)
    prepared = _settings(PreprocessConfig, config, settings)
    stats = run(prepared)
    return Prepared(Path(prepared.out), stats)


def train(config=None, **settings) -> Run:
    """`koqa sft --data ... --out RUN`."""
    from koqa.train import TrainConfig
    from koqa.train import train as run

    train_config = _settings(TrainConfig, config, settings)
    summary = run(train_config)
    return Run(Path(train_config.out), summary)


def evaluate(config=None, **settings) -> Evaluation:
    """`koqa eval --data ... --out DIR [--adapter RUN]`; `adapter` may be a run or a list of them."""
    from koqa.eval import pipeline
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.evaluate import evaluate as run

    if settings.get("adapter") is None:  # adapter=None: the base model, as with no adapter at all
        settings.pop("adapter", None)
    elif not isinstance(settings["adapter"], (list, tuple)):
        settings["adapter"] = [settings["adapter"]]
    eval_config = _settings(EvalConfig, config, settings)
    pipeline.PROGRESS_BAR = True
    try:
        result = run(eval_config)
    finally:
        pipeline.PROGRESS_BAR = False
    return Evaluation(Path(eval_config.out), result["metrics"])


def score(config=None, **settings) -> dict:
    """`koqa score --gold ... --pred ...`: the metrics."""
    from koqa.eval.scoring import ScoreConfig
    from koqa.eval.scoring import score as run

    return run(_settings(ScoreConfig, config, settings))


def compare(*runs, config=None, **settings) -> Table:
    """`koqa compare A B [C ...]`: each evaluation against the first."""
    from koqa.eval.compare import CompareConfig
    from koqa.eval.compare import compare as run

    if runs:
        settings["runs"] = list(runs)
    result = run(_settings(CompareConfig, config, settings))
    return Table([{"run": result["base"]["run"], **result["base"]}, *result["runs"]], result["markdown"], result)


def sweep(config=None, **settings) -> Table:
    """`koqa sweep`: variants trained, scored and tabulated."""
    from koqa.sweep import SweepConfig
    from koqa.sweep import sweep as run

    result = run(_settings(SweepConfig, config, settings))
    return Table(result["rows"], result["markdown"], result)


def submit(config=None, **settings) -> dict:
    """`koqa submit --pred ... --sample ... --out FILE`."""
    from koqa.eval.submission import SubmitConfig
    from koqa.eval.submission import submit as run

    return run(_settings(SubmitConfig, config, settings))
