"""`koqa demo`: the main job on the embedded default model and demo data.

preprocess -> zero-shot eval -> sft (LoRA, short) -> eval -> predictions for test.csv -> submission.
Its settings are koqa/configs/demo.yaml: one section per stage, read like that stage's own config.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from koqa.errors import KoqaError
from koqa.eval.eval_config import EvalConfig
from koqa.eval.submission import SubmitConfig
from koqa.preprocess import PreprocessConfig
from koqa.runs import RunFolder
from koqa.settings import build, setting
from koqa.train.train_config import TrainConfig

log = logging.getLogger(__name__)
DEMO_FILES = ("train.csv", "test.csv", "sample_submission.csv")


def shipped_demo_config() -> str:
    return str(Path(str(resources.files("koqa"))) / "configs" / "demo.yaml")


@dataclass
class DemoConfig:
    out: str = setting("runs/demo", help="folder for every artefact")
    data: str | None = setting(
        help="folder with train.csv, test.csv, sample_submission.csv (default: the embedded demo data)"
    )
    model: str | None = setting(help="local HF model folder or cached hub id (default: the embedded Gemma 3 270M)")
    max_steps: int | None = setting(help="training steps (default: sft.max_steps of the config)")
    backend: str | None = setting(
        help="generation backend (default: eval.backend of the config)",
        choices=EvalConfig.__dataclass_fields__["backend"].metadata["choices"],
    )
    preprocess: dict = setting({}, section=PreprocessConfig, cli=False, help="`koqa preprocess` settings")
    sft: dict = setting({}, section=TrainConfig, cli=False, help="`koqa sft` settings")
    eval: dict = setting({}, section=EvalConfig, cli=False, help="`koqa eval` settings")

    def stage(self, cls, section: str, **files):
        """The settings of one stage: its section, then the demo's own files, model and overrides."""
        given = {"model": self.model, "backend": self.backend, "max_steps": self.max_steps}
        names = cls.__dataclass_fields__
        mine = {k: v for k, v in given.items() if v is not None and k in names}
        return build(cls, [(f"demo section '{section}'", getattr(self, section)), ("demo", {**mine, **files})])


def _stage(name: str, number: int, total: int = 6) -> float:
    log.info("== stage %d/%d: %s", number, total, name)
    return time.perf_counter()


def demo(config: DemoConfig) -> dict:
    from koqa.data_tools.demo_data import demo_dir
    from koqa.eval.evaluate import evaluate
    from koqa.eval.pipeline import open_generator, prepare_eval, read_eval_records
    from koqa.eval.submission import submit
    from koqa.preprocess import preprocess
    from koqa.train import train

    data = Path(config.data) if config.data else demo_dir()
    for name in DEMO_FILES:
        if not (data / name).is_file():
            raise KoqaError(f"missing {name}", file=str(data), fix="pass a folder with the three Dacon files")
    out = Path(config.out)
    run_folder = RunFolder(out / "run")
    validation = str(out / "data" / "validation.jsonl")
    prep = config.stage(PreprocessConfig, "preprocess", inputs=[str(data / "train.csv")], out=str(out / "data"))
    sft = config.stage(
        TrainConfig, "sft", data=str(out / "data"), out=str(run_folder), resume=run_folder.holds_a_run()
    )
    before_config = config.stage(EvalConfig, "eval", data=validation, out=str(out / "eval_before"))
    after_config = config.stage(EvalConfig, "eval", data=validation, out=str(out / "eval_after"), adapter=[sft.out])
    test_config = config.stage(
        EvalConfig, "eval", data=str(data / "test.csv"), out=str(out / "test_predictions"), adapter=[sft.out]
    )
    started = time.perf_counter()
    timings = {}

    t = _stage("preprocess", 1)
    stats = preprocess(prep)
    timings["preprocess"] = time.perf_counter() - t

    t = _stage("zero-shot evaluation on the held-out questions", 2)
    before = evaluate(before_config)["metrics"]
    timings["eval_before"] = time.perf_counter() - t

    t = _stage("fine-tuning (LoRA)", 3)
    run = train(sft)
    timings["sft"] = time.perf_counter() - t

    t = _stage("evaluation with the adapter", 4)
    # one engine answers the held-out questions and test.csv
    generator = open_generator(prepare_eval(read_eval_records(after_config), after_config, sft.out), after_config)
    try:
        after = evaluate(after_config, generator=generator)["metrics"]
        timings["eval_after"] = time.perf_counter() - t

        t = _stage("answers for test.csv", 5)
        evaluate(test_config, generator=generator)
        timings["test"] = time.perf_counter() - t
    finally:
        generator.close()

    t = _stage("submission", 6)
    report = submit(
        SubmitConfig(
            pred=str(out / "test_predictions" / "predictions.csv"),
            sample=str(data / "sample_submission.csv"),
            out=str(out / "submission.csv"),
            empty="keep",
        )
    )
    timings["submit"] = time.perf_counter() - t

    total = time.perf_counter() - started
    lines = [
        "",
        f"koqa demo finished in {total / 60:.1f} min ({stats['splits']['train']} training and "
        f"{stats['splits']['validation']} held-out questions; {run['global_step']} LoRA steps)",
        "",
        "                     leaderboard F1   exact match",
        f"  before (zero-shot)   {before['f1']:.4f}          {before['exact_match']:.4f}",
        f"  after (LoRA)         {after['f1']:.4f}          {after['exact_match']:.4f}",
        "",
        f"  statistics      {out / 'data' / 'stats.md'}",
        f"  adapter         {run_folder.adapter_dir}",
        f"  loss curve      {run_folder.loss_curve}",
        f"  eval reports    {out / 'eval_before' / 'report.md'}, {out / 'eval_after' / 'report.md'}",
        f"  submission      {out / 'submission.csv'} ({report['rows']} rows, {report['empty']} empty answers)",
        "  stage minutes   " + ", ".join(f"{k} {v / 60:.1f}" for k, v in timings.items()),
    ]
    print("\n".join(lines))
    return {"before": before, "after": after, "timings": timings, "submission": str(out / "submission.csv")}
