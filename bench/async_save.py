"""What a periodic checkpoint costs the training steps: background (the trainer's default) vs blocking.

On the trainer's engine and step (bench/train_step.py's ``ours``), in one process, per model:
  - blocking: ``checkpoint.save_training_checkpoint`` (the save before background saves):
    training waits for the whole write;
  - background: ``async_save.AsyncCheckpointer.save`` blocks for the host copy; the writer
    thread then competes with the steps for CPU and memory bandwidth until the checkpoint is
    published. Its cost per save = (wall of the steps that ran while it was written, the copy
    included) - (wall of as many steps without a save), timed right after in the same round.
Rounds alternate (baseline steps are timed in every round), so load from elsewhere falls on
both alike; the median round counts. The overhead of saving every M minutes is the cost per save
over M minutes of training: a 10-minute interval is simulated by measuring one save and
dividing by 600 s (a real 10-minute interval would only add steps that cost nothing extra).

    python bench/async_save.py [--presets small,base] [--rounds 3] [--interval_minutes 10] [--device cpu]

Prints per model: step seconds, checkpoint bytes, blocking save seconds, background blocked
seconds (the host copy), background cost per save (wall, and the process's CPU seconds: what
the save adds when every core trains; steadier than wall on a shared machine), and the
overheads at the interval.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))
from train_step import (PRESETS, as_loader_batches, init_process_group, make_batches, model_cfg,  # noqa: E402
                        ours_engine, sync_device)

from hpc_bert.pretrain.async_save import AsyncCheckpointer  # noqa: E402
from hpc_bert.pretrain.checkpoint import rng_state, save_training_checkpoint  # noqa: E402
from hpc_bert.pretrain.distributed import agree_step  # noqa: E402
from hpc_bert.pretrain.engine import accumulate  # noqa: E402


def stepper(engine, batches, device):
    source = as_loader_batches(batches)

    def step():
        loss_sum, _, _ = accumulate(engine, source, 1, device)
        agree_step(0, 0.0, loss_sum, device)
    return step


def run_steps(step, n: int, device: str) -> tuple[float, float]:
    """(wall, process CPU seconds) of ``n`` steps."""
    sync_device(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    sync_device(device)
    return time.perf_counter() - t0, time.process_time() - c0


def background_round(engine, step, saver, tag_step: int, device: str, min_steps: int):
    """(blocked seconds, wall and CPU seconds of the steps until the save is published, steps taken)."""
    sync_device(device)
    t0, c0 = time.perf_counter(), time.process_time()
    blocked = saver.save(engine, tag_step, {"step": tag_step}, {"rng": rng_state(), "loader": {}}, 0.0, "periodic")
    n, done = 0, None
    while done is None or n < min_steps:
        step()
        n += 1
        done = done or saver.poll()
    sync_device(device)
    return blocked, time.perf_counter() - t0, time.process_time() - c0, n


def bench_preset(preset: str, args, work: str) -> dict:
    mcfg = model_cfg(preset, "pre-ln", 0.1)
    batches = make_batches(4, args.micro, args.seq, 20)
    engine = ours_engine(mcfg, args.micro, 1, args.device, False, 20, False, False)
    step = stepper(engine, batches, args.device)
    run_dir = os.path.join(work, preset)
    saver = AsyncCheckpointer(run_dir, 0, 1, keep=1)
    run_steps(step, 2, args.device)  # allocator warm-up
    blocking, blocked, cost, cpu_cost, base_step, n_steps = [], [], [], [], [], []
    tag = 0
    for _ in range(args.rounds):
        tag += 1
        b, wall, cpu, n = background_round(engine, step, saver, tag, args.device, args.min_steps)
        base, base_cpu = run_steps(step, n, args.device)  # the same steps without a save, right after
        blocked.append(b)
        cost.append(wall - base)
        cpu_cost.append(cpu - base_cpu)
        base_step.append(base / n)
        n_steps.append(n)
        tag += 1
        t0 = time.perf_counter()
        save_training_checkpoint(engine, run_dir, 0, tag, {"step": tag}, {"rng": rng_state(), "loader": {}}, 1,
                                 lambda: 0.0)
        blocking.append(time.perf_counter() - t0)
    folder = os.path.join(run_dir, "checkpoints", f"step_{tag:09d}")
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    interval_s = args.interval_minutes * 60
    med = {k: float(np.median(v)) for k, v in
           dict(blocking=blocking, blocked=blocked, cost=cost, cpu_cost=cpu_cost, step=base_step).items()}
    return {"preset": preset, "shape": f"{PRESETS[preset][0]}x{PRESETS[preset][1]}", "bytes": size,
            "steps_during_write": int(np.median(n_steps)), **med,
            "blocking_overhead": med["blocking"] / interval_s, "background_overhead": max(med["cost"], 0.0) / interval_s,
            "background_cpu_overhead": max(med["cpu_cost"], 0.0) / interval_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="small,base")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--interval_minutes", type=float, default=10.0)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--min_steps", type=int, default=3, help="steps per round at least (the write may end sooner)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work_dir", default=None, help="where checkpoints are written (default: a temp dir)")
    args = p.parse_args(argv)
    init_process_group()
    work = args.work_dir or tempfile.mkdtemp(prefix="hpc_bert_async_save_")
    rows = []
    try:
        for preset in args.presets.split(","):
            r = bench_preset(preset, args, work)
            rows.append(r)
            print(f"{r['preset']} ({r['shape']}): step {r['step']:.3f} s, checkpoint {r['bytes'] / 2**20:.0f} MiB; "
                  f"blocking save {r['blocking']:.3f} s; background: blocked {r['blocked']:.3f} s (host copy), "
                  f"cost per save {r['cost']:.3f} s wall, {r['cpu_cost']:.3f} s CPU, over {r['steps_during_write']} steps",
                  flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\noverhead of a save every {args.interval_minutes:g} min (cost per save / {args.interval_minutes * 60:.0f} s "
          f"of training; median of {args.rounds} rounds):")
    for r in rows:
        print(f"  {r['preset']:5s} {r['shape']:7s}: background {r['background_overhead']:.3%} (goal <= 1%; its CPU "
              f"time {r['background_cpu_overhead']:.3%}), "
              f"blocking {r['blocking_overhead']:.3%}; blocked per save: background {r['blocked']:.3f} s vs "
              f"blocking {r['blocking']:.3f} s (blocking / background {r['blocking'] / max(r['blocked'], 1e-9):.1f}x)")
    ok = all(r["background_overhead"] <= 0.01 for r in rows)
    print("async_save: PASS" if ok else "async_save: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
