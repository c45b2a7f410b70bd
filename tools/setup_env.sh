#!/usr/bin/env bash
# Create or reuse .venv and install hpc_bert with its dependencies.
# On a machine without an NVIDIA GPU the CPU build of torch is installed first, so that
# nothing later pulls a multi-GB CUDA build. Users with GPUs keep (or get) their own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HPC_BERT_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
stamp="$VENV/.hpc_bert_installed"
want=$(cat pyproject.toml tools/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python -m pip install -q --upgrade pip wheel setuptools
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q "torch==${HPC_BERT_CPU_TORCH:-2.13.0}" \
      || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# DeepSpeed is an sdist whose setup imports torch: build it against the torch installed
# above (no isolated build env, which would download another torch).
if ! python -c "import deepspeed" 2>/dev/null; then
  DS_BUILD_OPS=0 python -m pip install -q --no-build-isolation "deepspeed>=0.16,<0.20"
fi
python -m pip install -q -e ".[dev,data,wandb]"
echo "$want" > "$stamp"
