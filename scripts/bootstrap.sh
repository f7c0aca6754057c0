#!/usr/bin/env bash
# Create .venv with CPU torch and hpc-sft (editable, with test extras). Idempotent; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# CPU torch first: a bare `torch` requirement would pull several GB of CUDA packages.
python -c 'import torch' 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[dev]'
echo "bootstrap: $(python -c 'import torch, instructlab.training, submitit; print("torch", torch.__version__, "| submitit", submitit.__version__)')"
