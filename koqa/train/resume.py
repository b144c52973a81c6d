"""--resume: what a resumed run carries on from, and the refusal to resume with other settings."""

from __future__ import annotations

from koqa.errors import KoqaError
from koqa.runs import RunFolder, RunInfo
from koqa.settings import to_dict
from koqa.train.train_config import CHANGEABLE_ON_RESUME, TrainConfig


def last_logged(state: dict, key: str) -> int:
    """The value of a running count last logged before a checkpoint (0 when never logged); exact
    when save_steps is a multiple of logging_steps."""
    logged = [row[key] for row in state.get("log_history", []) if key in row]
    return int(logged[-1]) if logged else 0


def questions_seen_at(state: dict, config: TrainConfig) -> int:
    """Questions trained on up to a checkpoint: one a sequence without shared contexts, the logged
    count with them."""
    if not config.shared_context:
        return state.get("global_step", 0) * config.batch_size * config.gradient_accumulation_steps
    return last_logged(state, "questions_seen")


def check_resume_matches(
    run: RunFolder, config, template_text: str, info: RunInfo, changeable: frozenset = CHANGEABLE_ON_RESUME
) -> None:
    """Refuse to resume a run with settings, a prompt template or training data other than its own:
    the checkpoint's weights and optimizer state belong to those, and the run folder's config.yaml
    would no longer describe the adapter."""
    saved = run.saved_config()
    if saved is None:
        return
    now = to_dict(config)
    changed = [
        f"{key} {saved[key]!r} -> {now[key]!r}"
        for key in now
        if key in saved and key not in changeable and saved[key] != now[key]
    ]
    saved_template = run.saved_template()
    if saved_template is not None and saved_template != template_text:
        changed.append(f"template file '{config.template}' (its text differs from the run's template.txt)")
    old = run.info()
    if old is not None:
        for key in ("train_examples", "train_tokens"):
            if getattr(old, key) != getattr(info, key):
                changed.append(f"training data ({key} {getattr(old, key)} -> {getattr(info, key)})")
    if changed:
        raise KoqaError(
            "--resume with settings other than the run's own: " + "; ".join(changed),
            file=str(run.config_file),
            fix=f"resume with --config {run.config_file} and the same --data; only the length of "
            "the run and its saving, logging and validation settings may change",
        )
