"""Scoring, generation backends, evaluation and submissions (installed as ``koqa.eval``)."""
