"""The built package holds the whole program: every module and data file of the four package roots
(pyproject.toml and setup.py map eval/, data_tools/ and prompts/ into koqa), and nothing else.
.ci/run goes further: scripts/check_wheel.sh installs the wheel outside the checkout and runs it."""

import shutil
import subprocess
import sys
import zipfile

from conftest import REPO

ROOTS = {"koqa": "koqa", "data_tools": "koqa/data_tools", "eval": "koqa/eval", "prompts": "koqa/prompts"}
DATA_SUFFIXES = {".txt", ".yaml", ".csv", ".html"}


def tracked(*paths: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", *paths], cwd=REPO, capture_output=True, text=True, check=True)
    return listed.stdout.split()


def expected_files() -> set[str]:
    """The paths inside the wheel that the repository's package folders should become."""
    out = set()
    for path in tracked(*ROOTS):
        root, _, rest = path.partition("/")
        if path.endswith(".py") or any(path.endswith(s) for s in DATA_SUFFIXES):
            out.add(f"{ROOTS[root]}/{rest}")
    return out


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    source = tmp_path / "source"  # the tracked files as they are now; no build/ left by an earlier build
    for path in tracked():
        if (REPO / path).is_file():
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, source / path)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("koqa-*.whl")
    names = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    expected = expected_files()
    assert "koqa/train/run.py" in expected and "koqa/eval/evaluate.py" in expected
    assert expected - names == set(), "missing from the wheel"
    assert names - expected == set(), "in the wheel but not a tracked package file"
