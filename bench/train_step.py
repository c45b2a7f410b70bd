"""Training throughput: our step (DeepSpeed + sparse MLM head) against an HF Trainer baseline.

Same model shape, same batches, same machine, same run. The baseline is what a user would
write without this package: transformers' Trainer on BertForMaskedLM (full MLM head over
every position). Prints samples/s of each and their ratio (goal on CPU: >= 1.5x).

    python bench/train_step.py [--preset small|base|large] [--steps 20] [--device cpu|cuda] [--bf16]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = {  # (layers, hidden, heads, intermediate)
    "small": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
VOCAB = 30528  # BERT's 30522 padded to a multiple of 8


def model_cfg(preset: str, ln_mode: str):
    from hpc_bert.config.pretrain import ModelConfig
    layers, hidden, heads, inter = PRESETS[preset]
    return ModelConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=inter, max_position_embeddings=512, encoder_ln_mode=ln_mode,
                       hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def make_batches(n: int, micro: int, seq: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1000, VOCAB - 8, (micro, seq), generator=g)
        labels = torch.full_like(ids, -100)
        masked = torch.rand((micro, seq), generator=g) < 0.15
        labels[masked] = ids[masked]
        ids[masked] = 103
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "token_type_ids": torch.zeros_like(ids), "labels": labels})
    return out


def bench_ours(mcfg, batches, warmup: int, device: str, bf16: bool, sparse: bool = True,
               autocast: bool = True) -> float:
    import deepspeed
    from hpc_bert.config.pretrain import OptimConfig
    from hpc_bert.pretrain.distributed import DistEnv, init_distributed
    from hpc_bert.model.bert import MaskedLM, build_hf_model
    from hpc_bert.model.optim import build_optimizer
    init_distributed(DistEnv(0, 1, 0, "127.0.0.1", 29400 + os.getpid() % 500))
    torch.manual_seed(0)
    model = MaskedLM(build_hf_model(mcfg, VOCAB), sparse_prediction=sparse)
    micro = batches[0]["input_ids"].shape[0]
    opt_cfg = OptimConfig(train_batch_size=micro, train_micro_batch_size_per_gpu=micro)
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=build_optimizer(model, opt_cfg),
        config={"train_batch_size": micro, "train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": 1,
                # bf16 either as torch autocast over fp32 weights (what the trainer uses) or as
                # DeepSpeed's bf16 weights + fp32 master copy (BF16_Optimizer), for comparison.
                "torch_autocast": {"enabled": bf16 and autocast, "dtype": "bfloat16"},
                "bf16": {"enabled": bf16 and not autocast}, "zero_optimization": {"stage": 0}, "steps_per_print": 10 ** 12,
                "zero_allow_untested_optimizer": True})
    t0 = None
    for i, b in enumerate(batches):
        if i == warmup:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = engine(**{k: v.to(device) for k, v in b.items()})
        engine.backward(loss)
        engine.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rate = (len(batches) - warmup) * micro / (time.perf_counter() - t0)
    del engine, optimizer, model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rate


def train_flops_per_sample(mcfg, seq: int, masked: float) -> float:
    """Matmul FLOPs of one training sample (forward + backward = 3x forward).

    Encoder: 24 L h^2 per token for the projections and MLP, 4 L h s per token for the
    attention scores and weighted sum; MLM head (transform + tied decoder) only on the
    masked positions the sparse head computes. Embedding lookups do no matmul work.
    """
    L, h = mcfg.num_hidden_layers, mcfg.hidden_size
    forward = seq * (24 * L * h * h + 4 * L * h * seq) + masked * seq * 2 * (h * h + h * VOCAB)
    return 3 * forward


def bench_hf_trainer(mcfg, batches, warmup: int, bf16: bool) -> float:
    from torch.utils.data import Dataset
    from transformers import BertConfig, BertForMaskedLM, Trainer, TrainerCallback, TrainingArguments

    class Fixed(Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    class Timer(TrainerCallback):
        t0 = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                Timer.t0 = time.perf_counter()

    rows = [{k: v[j] for k, v in b.items()} for b in batches for j in range(b["input_ids"].shape[0])]
    micro = batches[0]["input_ids"].shape[0]
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=mcfg.hidden_size,
                                       num_hidden_layers=mcfg.num_hidden_layers,
                                       num_attention_heads=mcfg.num_attention_heads,
                                       intermediate_size=mcfg.intermediate_size, attn_implementation="sdpa"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=micro, max_steps=len(batches),
                                 learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                                 dataloader_drop_last=True, bf16=bf16, disable_tqdm=True, use_cpu=not torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=Fixed(rows), callbacks=[Timer()])
        trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (len(batches) - warmup) * micro / (time.perf_counter() - Timer.t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--micro", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--peak_tflops", type=float, default=790.0, help="dense bf16 peak for MFU (H100: ~790)")
    args = p.parse_args()
    mcfg = model_cfg(args.preset, "post-ln")
    batches = make_batches(args.steps + args.warmup, args.micro, args.seq)
    ours = bench_ours(mcfg, batches, args.warmup, args.device, args.bf16)
    dense = bench_ours(mcfg, batches, args.warmup, args.device, args.bf16, sparse=False)
    ds_bf16 = bench_ours(mcfg, batches, args.warmup, args.device, args.bf16, autocast=False) if args.bf16 else None
    base = bench_hf_trainer(mcfg, batches, args.warmup, args.bf16)
    print(f"preset {args.preset} ({mcfg.num_hidden_layers}x{mcfg.hidden_size}), seq {args.seq}, micro {args.micro}, "
          f"device {args.device}, {'bf16' if args.bf16 else 'fp32'}, {torch.get_num_threads()} threads")
    print(f"ours (DeepSpeed, sparse MLM head):  {ours:8.2f} samples/s")
    print(f"ours with the full MLM head:        {dense:8.2f} samples/s")
    if ds_bf16 is not None:
        print(f"ours, DeepSpeed bf16 weights:       {ds_bf16:8.2f} samples/s  (instead of autocast)")
    print(f"HF Trainer BertForMaskedLM:         {base:8.2f} samples/s")
    print(f"ratio ours / HF Trainer: {ours / base:.2f}x (goal >= 1.5x on CPU); sparse / full head: {ours / dense:.2f}x")
    if args.device.startswith("cuda"):
        flops = train_flops_per_sample(mcfg, args.seq, masked=0.15)
        print(f"MFU (sparse head's FLOPs, {flops / 1e9:.0f} GFLOP/sample): {ours * flops / (args.peak_tflops * 1e12):.1%}"
              f" of {args.peak_tflops:g} TFLOP/s; {ours * flops / 1e12:.0f} TFLOP/s achieved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
