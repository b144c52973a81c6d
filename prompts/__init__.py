"""Prompt template files (installed as ``koqa.prompts``)."""
