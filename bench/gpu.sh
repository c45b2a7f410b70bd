#!/usr/bin/env bash
# One prepared script for a lent GPU (device tool), about 7 minutes. Run from the repo root:
#   (here, once)  bash tools/gpu_wheels.sh         # fills .whl/ (ignored by git)
#   (device)      bash bench/gpu.sh                # with carry: [".whl"]
# Prints: BERT-large seq128 bf16 samples/s and MFU (ours vs HF Trainer), checkpoint save and
# restart times for BERT-large in bf16, and a stop + resume of the tiny model
# under fp16 + ZeRO-2 and bf16 + ZeRO-1 (paths a CPU cannot run).
#   (device)      bash bench/gpu.sh quality        # instead: the #6 quality check (prompt-based; QUALITY_FLAGS=--no-prompt
#                 for a classifier head), about 9 minutes,
#                 carry: [".whl", "data/quality/corpus_imdb+in_domain", "data/glue_data"] (prepared here by
#                 one `python bench/quality.py` run; the GPU machine has no registry)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_log.txt
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hpc_bert_site .whl/*.whl \
    || { echo "wheel install failed: run tools/gpu_wheels.sh here and carry .whl"; exit 1; }
export PYTHONPATH="$PWD:/tmp/hpc_bert_site${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_EXTENSIONS_DIR=/tmp/hpc_bert_ext PYTHONUNBUFFERED=1
if [ "${1:-}" = quality ]; then
    # a batch that fills a GPU better than the CPU default; seed 1 keeps the sweep inside one call
    timeout 560 "$PY" bench/quality.py --corpus imdb,in_domain --run_dir runs/gpu_quality --budget_hours 0.1 \
        --pretrain_flags "--train_batch_size 256 --train_micro_batch_size_per_gpu 256 --lr 3e-3 --dynamic_masking \
--mlm_probability 0.4" --seeds 1 --lrs 3e-4,1e-3,3e-3 ${QUALITY_FLAGS:-} 2>&1 | grep -v -i -E "warn|it/s\]" | tee "$LOG"
    exit "${PIPESTATUS[0]}"
fi
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)'
echo "== BERT-large, seq 128, bf16: training step =="
timeout 150 "$PY" bench/train_step.py --preset large --device cuda --bf16 --micro 128 --seq 128 --steps 20 --warmup 5 2>&1 \
    | grep -v -i -E "warn|^\[" ; echo "rc ${PIPESTATUS[0]}"
echo "== signal -> saved + exit, restart -> first step, BERT-large bf16 =="
timeout 170 "$PY" bench/preempt.py --presets large --flags "--bf16 true" 2>&1 | grep -v -i warn; echo "rc ${PIPESTATUS[0]}"
echo "== precision / ZeRO paths: tiny model stopped and resumed (~40 s each) =="
timeout 70 "$PY" bench/preempt.py --presets tiny --flags "--bf16 true --zero_stage 1" 2>&1 | grep -v -i warn; echo "rc ${PIPESTATUS[0]}"
timeout 70 "$PY" bench/preempt.py --presets tiny --flags "--fp16 true --zero_stage 2" 2>&1 | grep -v -i warn; echo "rc ${PIPESTATUS[0]}"
} 2>&1 | tee "$LOG"
