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
# CPU torch first: a bare `torch` requirement would pull several GB of CUDA packages. This project's
# machines hold a local CPU build of torch 2.13.0 that pip finds; elsewhere PyPI's torch is a CUDA build,
# so set HPC_SFT_TORCH_INDEX=https://download.pytorch.org/whl/cpu to take PyTorch's CPU wheel instead.
if ! python -c 'import torch' 2>/dev/null; then
  if [ -n "${HPC_SFT_TORCH_INDEX:-}" ]; then
    python -m pip install -q torch --index-url "$HPC_SFT_TORCH_INDEX"
  else
    python -m pip install -q torch==2.13.0
  fi
fi
python -m pip install -q -e '.[dev,trl,plot,track]'
echo "bootstrap: $(python -c 'import torch, instructlab.training, submitit; print("torch", torch.__version__, "| submitit", submitit.__version__)')"
