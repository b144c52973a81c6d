"""The docs that are generated are current, and the README stays a manual: at most 250 lines, its
results table made only of figures a benchmark wrote to bench/results/."""

import importlib.util
import re

from conftest import REPO

README = REPO / "README.md"
MAX_README_LINES = 250


def build_docs():
    spec = importlib.util.spec_from_file_location("build_docs", REPO / "bench" / "build_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_docs_are_current():
    stale = [str(path.relative_to(REPO)) for path, text in build_docs().pages().items() if path.read_text() != text]
    assert stale == [], "run: python bench/build_docs.py"


def test_the_settings_reference_lists_every_setting_of_every_command():
    from koqa.cli import COMMANDS

    reference = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    for name, command in COMMANDS.items():
        section = reference.split(f"### `koqa {name}`", 1)[1].split("### ", 1)[0]
        for field in command.load("settings").__dataclass_fields__:
            assert f"| `{field}` |" in section, (name, field)


def test_the_readme_is_a_manual_of_at_most_250_lines():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    assert "@@" not in text  # every walk-through output pasted


def results_table_figures(text: str) -> list[str]:
    section = text.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")][1:]
    return [n for row in rows for n in re.findall(r"\d[\d,]*\.?\d*", row)]


def test_every_figure_of_the_readme_results_table_is_in_a_benchmark_result():
    figures = results_table_figures(README.read_text(encoding="utf-8"))
    assert len(figures) >= 6
    written = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "bench" / "results").glob("*.json"))
    assert [f for f in figures if f not in written] == []


def test_the_figure_check_finds_a_figure_no_benchmark_wrote():
    table = "\n## Results\n\n| a | F1 |\n|---|---|\n| run | 0.73712 |\n\n## Layout\n"
    assert results_table_figures(table) == ["0.73712"]
