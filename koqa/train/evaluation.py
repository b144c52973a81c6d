"""Leaderboard F1 during training, the best adapter kept, and early stopping.

Every `eval_steps` optimiser steps `F1Evaluation` answers the first `eval_limit` validation questions
greedily with the model being trained, with the run's template and `koqa eval`'s lengths,
post-processing and metric. `eval_backend` says how: `hf` generates in this process over the live
weights; `vllm` (LoRA on a CPU) saves the adapter, merges it into a copy of the base model and
serves that from a vLLM engine in a child process, which costs a merge and an engine start per
evaluation and still answers faster there (docs/benchmarks.md); `auto` takes vllm where that holds.
It logs `eval_f1` and `eval_exact_match` through the trainer's log (so log.jsonl, TensorBoard and the
checkpoints' trainer_state.json all hold them), and saves the adapter to RUN/best/ when F1 beats
every earlier evaluation. `early_stopping_patience: K` stops after K evaluations in a row without
a better F1.

Nothing of this lives only in memory: a resumed run reads the evaluations so far from its
checkpoint's log history and the best score from RUN/best/, so a kill loses neither.
"""

from __future__ import annotations

import logging
import shutil
import time

from transformers import Trainer, TrainerCallback

from koqa.atomic import read_json, write_json
from koqa.runs import RunFolder

log = logging.getLogger(__name__)
BEST_FILE = "koqa_best.json"


class F1Evaluation(TrainerCallback):
    """Generate, score, log, keep the best, stop early. `attach(trainer)` before training.

    `eval_config` holds what `koqa eval --adapter RUN` would use for this run (its template, lengths,
    no-answer text, batch size and backend): the questions are prepared and answered by the
    evaluation core (koqa.eval.pipeline) as that command answers them."""

    def __init__(
        self,
        run: RunFolder,
        records: list,
        eval_config,
        tokenizer,
        *,
        every: int,
        model_path: str,
        patience: int | None = None,
    ):
        from koqa.eval.pipeline import prepare_eval

        self.run, self.tokenizer = run, tokenizer
        self.eval_config, self.backend = eval_config, eval_config.backend
        self.every, self.patience = every, patience
        self.model_path = model_path
        self.prepared = prepare_eval(records, eval_config)
        self.records = self.prepared.records
        self.trainer = None
        self.best_f1: float | None = None
        self.best_step: int | None = None
        self.without_improvement = 0
        self.stopped_early = False

    def attach(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        """Carry on from a resumed run: its evaluations are in the checkpoint's log history, its
        best adapter (which may come from steps after that checkpoint) in RUN/best/."""
        history = [row for row in state.log_history if "eval_f1" in row]
        saved = read_best(self.run)
        if saved is not None:
            self.best_f1, self.best_step = saved["eval_f1"], saved["step"]
        elif history:  # RUN/best/ was removed: the scores stand, the weights are gone
            top = max(history, key=lambda row: row["eval_f1"])
            self.best_f1, self.best_step = top["eval_f1"], top["step"]
        self.without_improvement = 0
        for row in history:
            if self.best_step is not None and row["step"] <= self.best_step:
                continue
            self.without_improvement += 1
        if history or saved:
            log.info(
                "evaluations so far: %d; best F1 %.4f at step %s", len(history), self.best_f1 or 0, self.best_step
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every or not state.is_world_process_zero:
            return
        if self.best_step is not None and state.global_step <= self.best_step:
            return  # redone after --resume: the steps up to the best were evaluated already
        scores = self.evaluate(model)
        self.run.append_evaluation(state.global_step, scores["predictions"])
        row = {"eval_f1": scores["f1"], "eval_exact_match": scores["exact_match"], **scores["cost"]}
        logging_step = control.should_log
        Trainer.log(self.trainer, row)  # transformers' log, not TRL's: TRL's would flush its training metrics
        control.should_log = logging_step  # the log event clears the flag; this step's loss row still comes
        if self.best_f1 is None or scores["f1"] > self.best_f1:
            self.best_f1, self.best_step, self.without_improvement = scores["f1"], state.global_step, 0
            save_best(self.run, model, self.tokenizer, state.global_step, scores)
            log.info(
                "step %d: F1 %.4f, EM %.4f: the best so far", state.global_step, scores["f1"], scores["exact_match"]
            )
        else:
            self.without_improvement += 1
            log.info(
                "step %d: F1 %.4f, EM %.4f (best %.4f at step %d)",
                state.global_step,
                scores["f1"],
                scores["exact_match"],
                self.best_f1,
                self.best_step,
            )
        if self.patience and self.without_improvement >= self.patience:
            log.info("early stopping: %d evaluations without a better F1", self.without_improvement)
            control.should_training_stop = True
            control.should_save = True
            self.stopped_early = True

    def evaluate(self, model) -> dict:
        """F1 and EM of the model as it is now, and its answers, from the evaluation core."""
        from koqa.eval.pipeline import answer_questions

        started = time.perf_counter()
        if self.backend == "vllm":
            generator = ChildVLLMGenerator(self.run, model, self.model_path)
            answers = answer_questions(self.prepared, self.eval_config, generator)
        else:
            from koqa.eval.hf_backend import HFGenerator
            from koqa.train.speed import uncompiled

            was_training = model.training
            generator = HFGenerator(
                str(self.run.path), model_obj=model, tokenizer=self.tokenizer, device=str(model.device)
            )
            try:
                with uncompiled():
                    answers = answer_questions(self.prepared, self.eval_config, generator)
            finally:
                generator.close()
                model.train(was_training)
        seconds = time.perf_counter() - started
        return {
            "f1": answers.metrics["f1"],
            "exact_match": answers.metrics["exact_match"],
            "predictions": answers.predictions,
            "cost": {"eval_questions": len(self.records), "eval_seconds": round(seconds, 2)},
        }


class ChildVLLMGenerator:
    """Greedy answers from vLLM in a child process, serving the adapter as it is now merged into a copy
    of the base model (RUN/evaluating/, removed afterwards): the generator of eval_backend vllm."""

    name = "vllm"
    streams = True  # every prompt in one child: a merge and an engine start per evaluation, not per chunk

    def __init__(self, run: RunFolder, model, model_path: str):
        self.run, self.model, self.model_path = run, model, model_path

    def generate_stream(self, prompts, params):
        yield list(enumerate(self.generate(prompts, params)))

    def generate(self, prompts, params) -> list[str]:
        import subprocess
        import sys

        folder = self.run.path / "evaluating"
        shutil.rmtree(folder, ignore_errors=True)
        try:
            save_trained_adapter(self.model, folder / "adapter")
            spec = {
                "adapter": str(folder / "adapter"),
                "model": self.model_path,
                "merged": str(folder / "merged"),
                "answers": str(folder / "answers.json"),
                "prompts": [list(p) for p in prompts],
                "max_new_tokens": params.max_new_tokens,
            }
            write_json(folder / "spec.json", spec)
            from koqa.console import quiet_descriptors

            with quiet_descriptors():  # the child's merge and engine output go to koqa.log
                result = subprocess.run([sys.executable, "-m", "koqa.train.vllm_answers", str(folder / "spec.json")])
            if result.returncode:
                raise RuntimeError(f"the vLLM evaluation child stopped with exit status {result.returncode}")
            return read_json(folder / "answers.json")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        pass


def pick_eval_backend(config) -> str:
    """eval_backend resolved by koqa.eval.backends.choose_backend's rule for evaluations during training."""
    from koqa.eval.backends import choose_backend
    from koqa.train.methods import METHODS

    return choose_backend(config.eval_backend, METHODS[config.method].peft_type, caller="training")


def save_best(run: RunFolder, model, tokenizer, step: int, scores: dict) -> None:
    """RUN/best/: the adapter now, replacing the earlier best as one unit, with its step and scores;
    the run info records it too."""
    staging = run.best_dir.with_name(run.best_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_trained_adapter(model, staging)
    tokenizer.save_pretrained(staging)
    record = {"step": step, "eval_f1": scores["f1"], "eval_exact_match": scores["exact_match"]}
    record["eval_questions"] = scores["cost"]["eval_questions"]
    write_json(staging / BEST_FILE, record)
    old = run.best_dir.with_name(run.best_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if run.best_dir.exists():
        run.best_dir.rename(old)
    staging.rename(run.best_dir)
    shutil.rmtree(old, ignore_errors=True)
    run.record_best({**record, "dir": run.best_dir.name})


def read_best(run: RunFolder) -> dict | None:
    path = run.best_dir / BEST_FILE
    if not path.is_file():
        return None
    return read_json(path)


def f1_curve_png(run: RunFolder) -> None:
    """RUN/f1_curve.png: validation F1 and EM against the step, the best marked."""
    from koqa.plots import new_figure, write_png

    rows = [r for r in run.log_rows() if "eval_f1" in r]
    if not rows:
        return
    fig, ax = new_figure()
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["eval_f1"] for r in rows], marker="o", color="#4477aa", label="leaderboard F1")
    ax.plot(steps, [r["eval_exact_match"] for r in rows], marker="s", color="#ee6677", label="exact match")
    best = read_best(run)
    if best is not None:
        ax.axvline(best["step"], color="#999999", linestyle="--", label=f"best (step {best['step']})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.legend()
    write_png(fig, run.f1_curve)


def save_trained_adapter(model, folder) -> None:
    """The adapter being trained, as safetensors in `folder`; a frozen reference adapter that `koqa rl`
    loads beside it (named "ref") is not part of the run's adapter."""
    peft_config = getattr(model, "peft_config", None) or {}
    only = {"selected_adapters": ["default"]} if len(peft_config) > 1 else {}
    model.save_pretrained(folder, safe_serialization=True, **only)
