"""A stop and a resume with --compile, to see the loss continue and the requeued compile read the cache.

Trains a preset on generated shards (BERT's vocab, seq 128), stops it with SIGUSR2 after step
--stop_at, resumes it (same run dir, so the same RUN_DIR/compile_cache) and stops it again
--more steps later. Prints each allocation's compile and startup seconds and the loss of the
steps around the resume.

    python bench/gpu_resume.py [--preset large] [--stop_at 30] [--more 30] [--flags "--bf16 true"]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "bench"))
from preempt import SHAPES  # noqa: E402
from pretrain_fixtures import tiny_flags, write_shards, write_vocab  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="large", choices=sorted(SHAPES))
    p.add_argument("--stop_at", type=int, default=30)
    p.add_argument("--more", type=int, default=30)
    p.add_argument("--micro", type=int, default=128)
    p.add_argument("--flags", default="--bf16 true --compile true")
    args = p.parse_args()
    words = args.flags.split()
    extra = {k.lstrip("-"): v for k, v in zip(words[::2], words[1::2])}
    with tempfile.TemporaryDirectory() as root:
        vocab = os.path.join(root, "vocab.txt")
        shards = os.path.join(root, "shards")
        write_shards(shards, write_vocab(vocab, n_words=30517), n_train=2, per_shard=4 * args.micro,
                     seq_len=128, n_pred=20)
        run = os.path.join(root, "run")
        flags = tiny_flags(run, shards, vocab, 1.0, print_steps=1, checkpoint_every_minutes=1000,
                           max_position_embeddings=128, train_batch_size=args.micro,
                           train_micro_batch_size_per_gpu=args.micro, lr=1e-4, warmup_proportion=0.01,
                           **SHAPES[args.preset], **extra)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for stop in (args.stop_at, args.stop_at + args.more):
            r = subprocess.run([sys.executable, "-m", "hpc_bert.train", *flags], cwd=REPO, capture_output=True,
                               text=True, env=dict(env, HPC_BERT_FAULTS=f"usr2@step:{stop}"), timeout=600)
            print(f"allocation signalled after step {stop}: exit {r.returncode}")
            if r.returncode != 75:
                print(r.stderr[-3000:])
                return 1
        events = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
        for i, e in enumerate(e for e in events if e["event"] == "allocation_start"):
            print(f"allocation {i + 1}: startup {e['startup_s']:.1f} s, of which compile {e['compile_s']:.1f} s")
        train = {e["step"]: e for e in events if e["event"] == "train"}
        around = range(max(1, args.stop_at - 5), min(max(train), args.stop_at + 6))
        print(f"{args.preset}, {args.flags}: loss by step around the resume after step {args.stop_at}")
        for s in around:
            mark = "  <- resumed after this step" if s == args.stop_at else ""
            print(f"  step {s:4d}  loss {train[s]['loss']:.4f}  {train[s]['samples_per_s']:8.1f} samples/s{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
