"""Package discovery for the layout of this repository (the rest of the metadata is in pyproject.toml).

`eval/`, `data_tools/` and `prompts/` sit beside `koqa/` in the repository and are installed as
`koqa.eval`, `koqa.data_tools` and `koqa.prompts`. setuptools' automatic discovery knows one root
only, so every package below each of the four roots is found here: a new sub-package ships without
a list to update (tests/test_packaging.py builds the wheel and compares it with the tree).
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {"koqa": "koqa", "koqa.eval": "eval", "koqa.data_tools": "data_tools", "koqa.prompts": "prompts"}

setup(
    package_dir=PACKAGE_DIRS,
    packages=[
        name
        for root, folder in PACKAGE_DIRS.items()
        for name in (root, *(f"{root}.{sub}" for sub in find_packages(folder)))
    ],
)
