#!/usr/bin/env bash
# One prepared script for a lent GPU (device tool), under 8 minutes. Run from the repo root:
#   (here, once)  bash tools/gpu_wheels.sh         # fills .whl/ (ignored by git)
#   (device)      bash bench/gpu.sh                # with carry: [".whl"]
# Prints: BERT-large seq128 bf16 samples/s and MFU (ours vs HF Trainer), checkpoint save time.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_EXTENSIONS_DIR=/tmp/hpc_bert_ext
python -m pip install -q --no-index --no-deps --target .whl/site .whl/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python - <<'PY'
import torch, transformers, deepspeed
print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)
PY
echo "== BERT-large, seq 128, bf16: training step =="
timeout 300 python bench/train_step.py --preset large --device cuda --bf16 --micro 128 --seq 128 --steps 20 --warmup 5
echo "== checkpoint save / restart, BERT-base (GPU) =="
timeout 150 python bench/preempt.py --presets base
