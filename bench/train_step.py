"""Training throughput, three ways on the same batches in one run, plus host syncs per step.

- HF Trainer: what a user writes without this package — transformers' Trainer on
  BertForMaskedLM (full MLM head), one process, no DDP wrapper at world size 1; on CUDA bf16,
  SDPA and fused AdamW. It runs first, before any process group exists, so the Trainer
  cannot mistake the run for a distributed one.
- bare: a plain PyTorch loop doing our step's math (the same model, static sparse head and
  optimizer; forward, backward, step), to show what the DeepSpeed engine and our loop cost.
- ours: the trainer's step (``engine.accumulate`` on the trainer's DeepSpeed engine, then the
  boundary's ``agree_step``), optionally with ``--compile``.

bare and ours are timed in alternating rounds (``--rounds``; the median round counts), so
that load from elsewhere on the machine falls on both alike.

Prints samples/s, real (non-padding) tokens/s, MFU with the FLOP count it uses, the ratios
ours/bare and ours/HF, and host syncs + all-reduces per optimizer step for ours and for the
loop as it was before the sync-free step (a float() per micro batch, a boolean-index gather, two
agreements per step), counted with hpc_bert.testing.syncs.

``--doc_masking sdpa[,flex]``: rows packed like ``--packing full_sentences`` (a document ends every
``--doc_tokens`` tokens on average) and ours timed again with per-document attention through each
kernel, in the same alternating rounds: the cost of document masking (goal: within 5%).

    python bench/train_step.py [--preset small|base|large] [--steps 12] [--rounds 3] [--device cpu|cuda] [--bf16] [--compile]
                               [--doc_masking sdpa,flex [--doc_tokens 64]]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = {  # (layers, hidden, heads, intermediate)
    "small": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
VOCAB = 30528  # BERT's 30522 padded to a multiple of 8
MASK_ID, SEP_ID = 103, 102


def model_cfg(preset: str, ln_mode: str, dropout: float):
    from hpc_bert.config.pretrain import ModelConfig
    layers, hidden, heads, inter = PRESETS[preset]
    return ModelConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=inter, max_position_embeddings=512, encoder_ln_mode=ln_mode,
                       hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def make_batches(n: int, micro: int, seq: int, max_predictions: int, seed: int = 0,
                 doc_tokens: int | None = None) -> list[dict]:
    """Static-masked batches like the shards': lengths from seq/2 to seq, 15% of real tokens
    masked, at most ``max_predictions`` per row. ``doc_tokens``: full rows packed like
    ``--packing full_sentences`` instead, a [SEP] ending a document every ``doc_tokens``
    tokens on average (never masked)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1000, VOCAB - 8, (micro, seq), generator=g)
        lengths = torch.randint(seq // 2, seq + 1, (micro,), generator=g)
        if doc_tokens:
            lengths = torch.full((micro,), seq)
            ids[torch.rand((micro, seq), generator=g) < 1 / doc_tokens] = SEP_ID
        attention = (torch.arange(seq)[None, :] < lengths[:, None]).long()
        labels = torch.full_like(ids, -100)
        for r in range(micro):
            k = min(max_predictions, max(1, round(0.15 * int(lengths[r]))))
            pos = torch.randperm(int(lengths[r]) - 2, generator=g) + 1
            pos = pos[ids[r, pos] != SEP_ID][:k]
            labels[r, pos] = ids[r, pos]
            ids[r, pos] = MASK_ID
        ids = ids * attention
        out.append({"input_ids": ids, "attention_mask": attention, "token_type_ids": torch.zeros_like(ids),
                    "labels": labels})
    return out


def sync_device(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(mcfg, max_predictions, compile_: bool, device: str, doc_kernel: str | None = None):
    """Our MaskedLM; ``doc_kernel`` (sdpa or flex): attention per document, else per row."""
    from hpc_bert.model.bert import MaskedLM, build_hf_model
    from hpc_bert.model.compile import compile_masked_lm
    torch.manual_seed(0)
    model = MaskedLM(build_hf_model(mcfg, VOCAB), sparse_prediction=True, max_predictions=max_predictions,
                     document_sep_id=SEP_ID if doc_kernel else None, attention_kernel=doc_kernel or "sdpa")
    if compile_:
        compile_masked_lm(model)
    return model.to(device)


def optimizer_for(model, ds_adam: bool):
    from hpc_bert.config.pretrain import OptimConfig
    from hpc_bert.model.optim import build_optimizer, parameter_groups
    if ds_adam:  # DeepSpeed's fused Adam (CUDA op, JIT-built) in AdamW mode
        from deepspeed.ops.adam import FusedAdam
        return FusedAdam(parameter_groups(model, 0.01), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, adam_w_mode=True)
    return build_optimizer(model, OptimConfig(lr=1e-4))


def timed(steps: int, device: str, step) -> float:
    """Seconds for ``steps`` calls of ``step``."""
    sync_device(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync_device(device)
    return time.perf_counter() - t0


def interleaved(steppers: dict, warmup: int, steps: int, rounds: int, device: str) -> dict[str, float]:
    """Median seconds per ``steps`` steps of each stepper, timed in alternating rounds (A B, B A,
    ...) so that a neighbour's load or a thermal drift hits every stepper alike."""
    for step in steppers.values():  # compile and allocator warmup, outside the timing
        for _ in range(warmup):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(rounds):
        for name in (list(steppers) if r % 2 == 0 else list(reversed(steppers))):
            seconds[name].append(timed(steps, device, steppers[name]))
    return {name: float(np.median(v)) for name, v in seconds.items()}


def bare_stepper(mcfg, batches, device, bf16, max_predictions, compile_, ds_adam, doc_kernel=None):
    """A plain PyTorch loop of our step's math: forward, backward, step, zero_grad."""
    import itertools
    model = build_model(mcfg, max_predictions, compile_, device, doc_kernel).train()
    opt = optimizer_for(model, ds_adam)
    kind = device.split(":")[0]
    source = itertools.cycle(batches)

    def step():
        with torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**{k: v.to(device) for k, v in next(source).items()})
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def init_process_group() -> None:
    from hpc_bert.pretrain.distributed import DistEnv, init_distributed
    init_distributed(DistEnv(0, 1, 0, "127.0.0.1", 29400 + os.getpid() % 500))


def ours_engine(mcfg, micro, accum, device, bf16, max_predictions, compile_, ds_adam, doc_kernel=None):
    """The trainer's engine: its DeepSpeed config and construction (hpc_bert.pretrain.engine)."""
    import dataclasses
    from hpc_bert.config.pretrain import PretrainConfig
    from hpc_bert.pretrain.engine import deepspeed_config, initialize_engine
    cfg = PretrainConfig()
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, train_batch_size=micro * accum,
                                                             train_micro_batch_size_per_gpu=micro),
                              runtime=dataclasses.replace(cfg.runtime, bf16=bf16))
    model = build_model(mcfg, max_predictions, compile_, device, doc_kernel)
    engine, _ = initialize_engine(model, optimizer_for(model, ds_adam), deepspeed_config(cfg, accum, device))
    engine.train()
    return engine


def as_loader_batches(batches):
    import itertools
    from hpc_bert.data.loader import Batch
    return itertools.cycle([Batch(0, i, False, b, np.arange(len(b['input_ids']))) for i, b in enumerate(batches)])


def ours_stepper(mcfg, batches, device, bf16, max_predictions, compile_, ds_adam, doc_kernel=None):
    """The trainer's work per optimizer step: the micro batches, then the boundary's agreement."""
    from hpc_bert.pretrain.distributed import agree_step
    from hpc_bert.pretrain.engine import accumulate
    micro = batches[0]["input_ids"].shape[0]
    engine = ours_engine(mcfg, micro, 1, device, bf16, max_predictions, compile_, ds_adam, doc_kernel)
    source = as_loader_batches(batches)

    def step():
        loss_sum, _, _ = accumulate(engine, source, 1, device)
        agree_step(0, 0.0, loss_sum, device)

    return step


def count_syncs(mcfg, batches, device, bf16, max_predictions, accum: int) -> tuple[dict, dict]:
    """Host syncs and all-reduces in one optimizer step of ``accum`` micro batches: ours, and the
    loop before the sync-free step (its code as it was: float(loss) per micro batch, the boolean-index
    gather, all_agree_max before and after the step)."""
    from hpc_bert.pretrain.distributed import agree_step, all_agree_max
    from hpc_bert.pretrain.engine import accumulate
    from hpc_bert.testing.syncs import HostSyncCounter
    micro = batches[0]["input_ids"].shape[0]
    out = {}
    for name, max_pred in (("before", None), ("ours", max_predictions)):
        engine = ours_engine(mcfg, micro, accum, device, bf16, max_pred, False, False)
        if name == "before":  # it passed the 2-D mask, which transformers checks for padding on the host
            hf = engine.module
            hf.encode = lambda ids, mask, types: hf.encoder(input_ids=ids, attention_mask=mask,
                                                            token_type_ids=types).last_hidden_state
        source = as_loader_batches(batches)
        accumulate(engine, source, accum, device)  # first step outside the count (lazy state)
        counters = [st["step"] for st in engine.optimizer.state.values() if torch.is_tensor(st.get("step"))]
        with HostSyncCounter(host_tensors=counters) as c:
            if name == "ours":
                loss_sum, _, _ = accumulate(engine, source, accum, device)
                agree_step(0, 1.0, loss_sum, device)
            else:
                all_agree_max([0.0, 1.0], device)
                loss_total = 0.0
                for _ in range(accum):
                    b = next(source)
                    loss = engine(**{k: t.to(device) for k, t in b.tensors.items()})
                    engine.backward(loss)
                    engine.step()
                    loss_total += float(loss.detach())
                all_agree_max([0.0, 1.0], device)
        out[name] = {"syncs": c.total, "by_op": dict(c.syncs), "all_reduces": c.all_reduces}
        del engine
    return out["before"], out["ours"]


def train_flops_per_sample(mcfg, seq: int, head_rows: float) -> float:
    """Matmul FLOPs of one training sample (forward + backward = 3x forward).

    Encoder: 24 L h^2 per token for the projections and MLP, 4 L h s per token for the
    attention scores and weighted sum (padding included: the kernels compute it); MLM head
    (transform + tied decoder) on the ``head_rows`` rows per sample the static gather feeds
    it. Embedding lookups do no matmul work.
    """
    L, h = mcfg.num_hidden_layers, mcfg.hidden_size
    forward = seq * (24 * L * h * h + 4 * L * h * seq) + head_rows * 2 * (h * h + h * VOCAB)
    return 3 * forward


def bench_hf_trainer(mcfg, batches, warmup: int, steps: int, bf16: bool) -> tuple[float, str]:
    """Seconds for ``steps`` Trainer steps after ``warmup`` (the Trainer shuffles the same rows)."""
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
                sync_device("cuda" if torch.cuda.is_available() else "cpu")
                Timer.t0 = time.perf_counter()

    rows = [{k: v[j] for k, v in b.items()} for b in batches for j in range(b["input_ids"].shape[0])]
    micro = batches[0]["input_ids"].shape[0]
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=mcfg.hidden_size,
                                       num_hidden_layers=mcfg.num_hidden_layers,
                                       num_attention_heads=mcfg.num_attention_heads,
                                       intermediate_size=mcfg.intermediate_size,
                                       hidden_dropout_prob=mcfg.hidden_dropout_prob,
                                       attention_probs_dropout_prob=mcfg.attention_probs_dropout_prob,
                                       attn_implementation="sdpa"))
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=micro, max_steps=warmup + steps,
                                 learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                                 dataloader_drop_last=True, bf16=bf16, disable_tqdm=True, use_cpu=not cuda,
                                 optim="adamw_torch_fused")  # the Trainer's default, on CPU too
        trainer = Trainer(model=model, args=args, train_dataset=Fixed(rows), callbacks=[Timer()])
        trainer.train()
        wrapped = type(trainer.model_wrapped).__name__
    sync_device("cuda" if cuda else "cpu")
    return time.perf_counter() - Timer.t0, wrapped


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds of --steps for bare and ours")
    p.add_argument("--micro", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--max_predictions", type=int, default=20, help="per sequence, as the shards' (ABB: 20 at 128)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile bare and ours (warmup absorbs it)")
    p.add_argument("--ds_adam", action="store_true", help="DeepSpeed's FusedAdam instead of torch's AdamW")
    p.add_argument("--only", default="hf,bare,ours,syncs", help="which measurements, comma-separated")
    p.add_argument("--doc_masking", default="",
                   help="time ours with per-document attention too, through these kernels (sdpa, flex; "
                        "comma-separated); rows are then packed")
    p.add_argument("--doc_tokens", type=int, default=64, help="mean document length in packed rows (--doc_masking)")
    p.add_argument("--sync_accum", type=int, default=2, help="micro batches per step when counting syncs")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="peak for MFU; default 790 (H100/H200 dense bf16) on CUDA, none on CPU")
    args = p.parse_args()
    mcfg = model_cfg(args.preset, "pre-ln", args.dropout)
    doc_kernels = [k for k in args.doc_masking.split(",") if k]
    batches = make_batches(args.steps, args.micro, args.seq, args.max_predictions,  # a timed round: each once
                           doc_tokens=args.doc_tokens if doc_kernels else None)
    timed_samples = args.steps * args.micro
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    only = set(args.only.split(","))
    # the Trainer first, before any process group exists
    hf = bench_hf_trainer(mcfg, batches, args.warmup, args.steps, args.bf16) if "hf" in only else None
    common = (mcfg, batches, args.device, args.bf16, args.max_predictions, args.compile, args.ds_adam)
    steppers = {"bare": bare_stepper(*common)} if "bare" in only else {}
    init_process_group()
    steppers["ours"] = ours_stepper(*common)
    for kernel in doc_kernels:
        steppers[f"ours, per-document attention ({kernel})"] = ours_stepper(*common, kernel)
    seconds = interleaved(steppers, args.warmup, args.steps, args.rounds, args.device)
    ours, bare = seconds["ours"], seconds.get("bare")
    syncs = count_syncs(mcfg, batches, args.device, args.bf16, args.max_predictions, args.sync_accum) \
        if "syncs" in only else None

    peak = args.peak_tflops or (790.0 if args.device.startswith("cuda") else None)
    flops = train_flops_per_sample(mcfg, args.seq, args.max_predictions)
    print(("packed rows, " if doc_kernels else "") + f"preset {args.preset} ({mcfg.num_hidden_layers}x{mcfg.hidden_size}, vocab {VOCAB}, pre-LN), seq {args.seq}, "
          f"micro {args.micro}, dropout {args.dropout:g}, device {args.device}, {'bf16' if args.bf16 else 'fp32'}, "
          f"{'compiled' if args.compile else 'eager'}, {'DeepSpeed FusedAdam' if args.ds_adam else 'torch AdamW'}, "
          f"{torch.get_num_threads()} threads; {args.steps} timed steps after {args.warmup} warmup, "
          f"median of {args.rounds} alternating rounds for bare and ours")
    print(f"FLOPs per sample {flops / 1e9:.2f} GFLOP (3 x forward: seq x (24 L h^2 + 4 L h seq) + "
          f"{args.max_predictions} head rows x 2 (h^2 + h V))")
    rows = [("ours (DeepSpeed engine, our loop)", ours)]
    rows += [(name, sec) for name, sec in seconds.items() if name.startswith("ours, ")]
    if bare is not None:
        rows.append(("bare PyTorch loop, same math", bare))
    if hf is not None:
        rows.append((f"HF Trainer BertForMaskedLM ({hf[1]})", hf[0]))
    for name, seconds in rows:
        rate = timed_samples / seconds
        mfu = f"  MFU {rate * flops / (peak * 1e12):6.1%} of {peak:g} TFLOP/s" if peak else ""
        print(f"{name:42s} {rate:9.2f} samples/s  {real_tokens / seconds:11.0f} real tokens/s  "
              f"{rate * flops / 1e12:7.2f} TFLOP/s{mfu}")
    if bare is not None:
        print(f"ratio ours / bare: {bare / ours:.3f}x (goal >= 0.95)")
    for name, sec in seconds.items():
        if name.startswith("ours, "):
            print(f"document masking cost, {name[6:]}: {ours / sec:.3f}x the per-row step's rate "
                  f"(goal >= 0.95; packed rows, a document every {args.doc_tokens} tokens on average)")
    if hf is not None:
        print(f"ratio ours / HF Trainer: {hf[0] / ours:.2f}x (goal >= 1.5)")
    if syncs is None:
        return 0
    before, after = syncs
    print(f"host syncs per optimizer step of {args.sync_accum} micro batches: before {before['syncs']} "
          f"{before['by_op']}, {before['all_reduces']} all-reduces; ours {after['syncs']} {after['by_op']}, "
          f"{after['all_reduces']} all-reduce")
    return 0


if __name__ == "__main__":
    sys.exit(main())
