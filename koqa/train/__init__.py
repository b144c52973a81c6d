"""Fine-tuning (`koqa sft`): settings (train_config.py), the methods (methods.py), the data (data.py), the
trainer (trainer.py), resuming (resume.py) and the run itself (run.py)."""

from koqa.train.train_config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig) -> dict:
    """Fine-tune as `config` says; see `koqa.train.run.train`."""
    from koqa.train.run import train as run

    return run(config)
