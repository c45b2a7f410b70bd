"""How fast a job gives up its allocation and how fast a requeued one gets back to work.

For the tiny and the BERT-base shapes (wall clock, CPU unless a GPU is present):
  signal -> exit:   SIGUSR2 to a training process until it has saved a durable checkpoint
                    and exited (the time SLURM's --signal lead must cover);
  restart -> step:  a new process until its first optimizer step after resuming (imports,
                    model build, DeepSpeed init, checkpoint load), from the ledger's startup_s.

    python bench/preempt.py [--presets tiny,base,large] [--flags "--bf16 true --zero_stage 1"]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from pretrain_fixtures import tiny_flags, write_shards, write_vocab  # noqa: E402

SHAPES = {"tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
          "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)}


def first_train_event(run_dir: str, timeout: float) -> None:
    path = os.path.join(run_dir, "metrics.jsonl")
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path) and '"event": "train"' in open(path).read():
            return
        time.sleep(0.2)
    raise RuntimeError("training did not log a step in time")


def measure(preset: str, root: str, vocab: str, shards: str, extra: dict) -> dict:
    run = os.path.join(root, f"run_{preset}")
    flags = tiny_flags(run, shards, vocab, 1.0, print_steps=1, checkpoint_every_minutes=1000,
                       max_position_embeddings=128, **SHAPES[preset], **extra)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "hpc_bert.train", *flags]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_train_event(run, 600)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGUSR2)
    rc = proc.wait(600)
    stop_s = time.monotonic() - t0
    assert rc == 75, proc.stderr.read()[-2000:]
    print(f"{preset}: signal -> saved + exit {stop_s:.2f} s; restarting", flush=True)
    saves = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl")) if '"checkpoint"' in x]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_train_event_after = time.monotonic()
    while True:  # wait for the second allocation's first train event
        events = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
        starts = [i for i, e in enumerate(events) if e["event"] == "allocation_start"]
        if len(starts) == 2 and any(e["event"] == "train" for e in events[starts[1]:]):
            break
        if time.monotonic() - first_train_event_after > 600:
            raise RuntimeError("resumed run did not step")
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR2)
    proc.wait(600)
    ledger = json.load(open(os.path.join(run, "budget.json")))
    return {"preset": preset, "signal_to_exit_s": stop_s, "save_s": saves[-1]["seconds"],
            "restart_to_first_step_s": ledger["allocations"][1]["startup_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,base")
    p.add_argument("--flags", default="", help='extra trainer flags, e.g. "--bf16 true --zero_stage 1"')
    args = p.parse_args()
    words = args.flags.split()
    extra = {k.lstrip("-"): v for k, v in zip(words[::2], words[1::2])}
    with tempfile.TemporaryDirectory() as root:
        vocab = os.path.join(root, "vocab.txt")
        n = write_vocab(vocab, n_words=30517)  # BERT's vocabulary size
        shards = os.path.join(root, "shards")
        write_shards(shards, n, n_train=2, per_shard=256, seq_len=128, n_pred=20)
        rows = [measure(p, root, vocab, shards, extra) for p in args.presets.split(",")]
    print(f"trainer flags: {args.flags or '(defaults)'}")
    print(f"{'preset':8} {'signal->exit s':>15} {'of which save s':>16} {'restart->first step s':>22}")
    for r in rows:
        print(f"{r['preset']:8} {r['signal_to_exit_s']:15.2f} {r['save_s']:16.2f} {r['restart_to_first_step_s']:22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
