#!/usr/bin/env bash
# The package as a user installs it, not the checkout: builds the sdist and, from it, the wheel;
# installs the wheel (not editable) into a fresh virtual environment outside the checkout; and runs
# koqa from there: --help, preprocess of the demo data, a 2-step sft, an eval and an export on a tiny model,
# score, and the import contract (lint-imports) over the installed modules.
# The fresh environment borrows the heavy dependencies (torch, vLLM...) from .venv through a path
# entry instead of downloading them again; koqa itself comes only from the wheel, which is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -m build --no-isolation --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
.venv/bin/python -m venv "$WORK/env"
"$WORK/env/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-index "$WORK"/dist/koqa-*.whl
DEPS=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ENV_SITE=$("$WORK/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPS" >"$ENV_SITE/koqa-check-dependencies.pth"
export PATH="$WORK/env/bin:$PATH"
cd "$WORK"
set -x
python - "$REPO" <<'PY'
import sys
from pathlib import Path

import koqa, koqa.train.run  # noqa: E401  the modules a checkout-only install used to hide

installed = Path(koqa.__file__).resolve()
assert not installed.is_relative_to(Path(sys.argv[1]).resolve()), f"koqa imported from the checkout: {installed}"
print("koqa from", installed.parent)
PY
koqa --help >/dev/null
DEMO=$(python -c 'import koqa.data_tools, pathlib; print(pathlib.Path(koqa.data_tools.__file__).parent / "demo")')
koqa preprocess "$DEMO/train.csv" --out data
python "$REPO/tests/tiny_model.py" tiny >/dev/null
koqa sft --data data --out run --model tiny --max-steps 2 --set max_length=256 --set batch_size=2 \
  --set lora_r=4 --set validation_limit=0
koqa eval --data data/validation.jsonl --adapter run --backend hf --limit 2 --out val
koqa export --adapter run --model tiny --format hf --out exported >/dev/null
test -f exported/model/model.safetensors && test -f exported/koqa_export.json
koqa serve --help >/dev/null
head -n 2 data/validation.jsonl >gold.jsonl
koqa score --gold gold.jsonl --pred val/predictions.csv --out scored
python - <<'PY'
import json

evaluated, scored = (json.load(open(f"{d}/metrics.json", encoding="utf-8")) for d in ("val", "scored"))
assert evaluated["n"] == scored["n"] == 2 and evaluated["f1"] == scored["f1"], (evaluated, scored)
# the pages, drawn from the template the wheel ships as package data
for page in ("data/data.html", "val/report.html", "scored/report.html"):
    assert 'id="koqa-data"' in open(page, encoding="utf-8").read(), page
PY
python -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())" \
  --config "$REPO/pyproject.toml"
