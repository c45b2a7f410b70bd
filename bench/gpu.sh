#!/usr/bin/env bash
# One prepared script for a lent GPU (device tool), about 7 minutes. Run from the repo root:
#   (here, once)  bash tools/gpu_wheels.sh         # fills .whl/ (ignored by git)
#   (device)      bash bench/gpu.sh                # with carry: [".whl"]
# Prints, in about 8 minutes: BERT-large seq128 bf16 samples/s, real tokens/s and MFU of the
# HF Trainer, a bare loop and ours with --compile; ours eager; on packed rows at dropout 0, ours per row
# vs per-document attention through SDPA's boolean mask and through FlexAttention (the document-masking
# cost; the per-row line there is also the dropout-0 figure); micro batch 256 vs 128, DeepSpeed's
# FusedAdam vs torch's fused AdamW; a BERT-large stop/resume with --compile (compile s of the first and
# the requeued allocation, the loss across the resume).
# The precision / ZeRO paths and checkpoint timings: bench/preempt.py, e.g.
#   bench/preempt.py --presets large --flags "--bf16 true"; --presets tiny --flags "--fp16 true --zero_stage 2"
#   (device)      bash bench/gpu.sh quality        # instead: the pretraining quality check (prompt-based; QUALITY_FLAGS=--no-prompt
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
"$PY" -c 'import triton; print("triton", triton.__version__)' || echo "no triton: --compile falls back to eager (one log line)"
export TORCHINDUCTOR_CACHE_DIR=/tmp/hpc_bert_inductor  # shared by the bench runs below: same graphs compile once
TS="bench/train_step.py --preset large --device cuda --bf16 --seq 128 --steps 20 --warmup 5"
quiet() { grep -v -i -E "warn|^\[|it/s\]"; }
echo "== BERT-large, seq 128, bf16, micro 128, --compile: HF Trainer / bare loop / ours, host syncs =="
timeout 170 "$PY" $TS --micro 128 --compile 2>&1 | quiet; echo "rc ${PIPESTATUS[0]}"
echo "== the same, eager (what --compile buys) =="
timeout 45 "$PY" $TS --micro 128 --only ours --rounds 1 2>&1 | quiet; echo "rc ${PIPESTATUS[0]}"
echo "== packed rows, dropout 0 (FlexAttention has no attention dropout): per row vs per document (SDPA mask, FlexAttention) =="
timeout 150 "$PY" $TS --micro 128 --compile --dropout 0 --only ours --rounds 3 --doc_masking sdpa,flex 2>&1 | quiet; echo "rc ${PIPESTATUS[0]}"
echo "== micro batch 256 instead of 128 =="
timeout 60 "$PY" $TS --micro 256 --compile --only ours --rounds 1 2>&1 | quiet; echo "rc ${PIPESTATUS[0]}"
echo "== DeepSpeed's FusedAdam instead of torch's fused AdamW =="
timeout 45 "$PY" $TS --micro 128 --compile --ds_adam --only ours --rounds 1 2>&1 | quiet; echo "rc ${PIPESTATUS[0]}"
echo "== BERT-large --compile true --bf16: stopped by SIGUSR2 at step 30, requeued; loss across the resume =="
timeout 110 "$PY" bench/gpu_resume.py 2>&1 | quiet; echo "rc ${PIPESTATUS[0]}"
} 2>&1 | tee "$LOG"
