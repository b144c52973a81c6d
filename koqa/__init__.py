"""koqa: Korean question-answering fine-tuning and evaluation."""

__version__ = "0.1.0"
