"""`koqa demo`: the main job on the embedded default model and demo data.

preprocess -> zero-shot eval -> sft (LoRA, short) -> eval -> predictions for test.csv -> submission.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path

from koqa.errors import KoqaError

log = logging.getLogger(__name__)


def _stage(name: str, number: int, total: int = 6) -> float:
    log.info("== stage %d/%d: %s", number, total, name)
    return time.perf_counter()


def run_demo(out_dir: str = "runs/demo", data_dir: str | None = None, model: str | None = None,
             max_steps: int | None = None, backend: str = "auto") -> dict:
    from koqa.data_tools.demo_data import demo_dir
    from koqa.eval.backends import choose_backend, load_generator
    from koqa.eval.evaluate import EvalConfig, run_eval
    from koqa.model_store import resolve_model
    from koqa.eval.submission import write_submission
    from koqa.preprocess import PreprocessConfig, run_preprocess
    from koqa.sft import run_sft

    data = Path(data_dir) if data_dir else demo_dir()
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        if not (data / name).is_file():
            raise KoqaError(f"missing {name}", file=str(data), fix="pass a folder with the three Dacon files")
    out = Path(out_dir)
    config_file = str(Path(str(resources.files("koqa"))) / "configs" / "demo.yaml")
    started = time.perf_counter()
    timings = {}

    t = _stage("preprocess", 1)
    stats = run_preprocess([str(data / "train.csv")], str(out / "data"),
                           PreprocessConfig(model=model, validation_fraction=0.15, max_length=384))
    timings["preprocess"] = time.perf_counter() - t
    validation = str(out / "data" / "validation.jsonl")

    t = _stage("zero-shot evaluation on the held-out questions", 2)
    eval_config = EvalConfig(model=model, backend=backend, max_length=384, max_new_tokens=24)
    before = run_eval(validation, str(out / "eval_before"), eval_config)["metrics"]
    timings["eval_before"] = time.perf_counter() - t

    t = _stage("fine-tuning (LoRA)", 3)
    run = run_sft(data=str(out / "data"), out_dir=str(out / "run"), config_path=config_file, model=model,
                  max_steps=max_steps, resume=(out / "run" / "checkpoints").is_dir())
    timings["sft"] = time.perf_counter() - t

    t = _stage("evaluation with the adapter", 4)
    adapter = str(out / "run" / "adapter")
    generator = load_generator(choose_backend(backend, adapter), resolve_model(model), adapter,
                               max_model_len=eval_config.max_length + eval_config.max_new_tokens)
    after = run_eval(validation, str(out / "eval_after"), eval_config, adapter=str(out / "run"),
                     generator=generator)["metrics"]
    timings["eval_after"] = time.perf_counter() - t

    t = _stage("answers for test.csv", 5)
    run_eval(str(data / "test.csv"), str(out / "test_predictions"), eval_config, adapter=str(out / "run"),
             generator=generator)
    timings["test"] = time.perf_counter() - t

    t = _stage("submission", 6)
    report = write_submission(str(out / "test_predictions" / "predictions.csv"), str(data / "sample_submission.csv"),
                              str(out / "submission.csv"), empty="keep")
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
        f"  adapter         {out / 'run' / 'adapter'}",
        f"  loss curve      {out / 'run' / 'loss_curve.png'}",
        f"  eval reports    {out / 'eval_before' / 'report.md'}, {out / 'eval_after' / 'report.md'}",
        f"  submission      {out / 'submission.csv'} ({report['rows']} rows, {report['empty']} empty answers)",
        "  stage minutes   " + ", ".join(f"{k} {v / 60:.1f}" for k, v in timings.items()),
    ]
    print("\n".join(lines))
    return {"before": before, "after": after, "timings": timings, "submission": str(out / "submission.csv")}
