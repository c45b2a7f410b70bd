"""Loader throughput vs what a trainer consumes.

Measures PretrainingDataLoader samples/s (prefetch thread on, several epochs so shard
switches are included) on our uint16 layout and on ABB's int32 gzip layout, then the
samples/s of a tiny BERT MLM training step on this machine (or a number you pass), and
prints the ratio, all in the same run (goal >= 20x).

    python bench/loader.py                              # synthetic shards, 128 tokens
    python bench/loader.py --dataset_path DATA          # real shards from `prepare`
    python bench/loader.py --trainer_samples_per_s 3000 # e.g. a GPU's measured rate
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpc_bert.data.loader import PretrainingDataLoader  # noqa: E402
from hpc_bert.testing.synthetic import write_random_shard  # noqa: E402


def loader_rate(path: str, micro_batch: int, batches: int, **kw) -> tuple[float, int]:
    loader = PretrainingDataLoader(path, micro_batch, **kw)
    it = iter(loader)
    next(it)  # first shard read happens at start-up in training too
    start = time.perf_counter()
    epoch = 0
    for batch in itertools.islice(it, batches):
        epoch = batch.epoch
    elapsed = time.perf_counter() - start
    return batches * micro_batch / elapsed, epoch


def tiny_trainer_rate(micro_batch: int, seq_len: int, steps: int = 6) -> float:
    """Samples/s of a 2-layer, 128-wide BERT MLM step (sparse MLM head, backward, AdamW) on this CPU."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=512,
                                       max_position_embeddings=max(512, seq_len)))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(1000, 30000, (micro_batch, seq_len))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": labels}
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            start = time.perf_counter()
        # sparse MLM prediction, as the trainer does: the head only sees masked positions
        hidden = model.bert(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
        picked = batch["labels"] != -100
        logits = model.cls(hidden[picked])
        torch.nn.functional.cross_entropy(logits, batch["labels"][picked]).backward()
        optim.step()
        optim.zero_grad()
    return steps * micro_batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_path", help="folder of shards; default: synthetic shards")
    parser.add_argument("--micro_batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--trainer_samples_per_s", type=float, help="skip measuring the tiny trainer")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        rates = {}
        if args.dataset_path:
            rates["given dataset"] = loader_rate(args.dataset_path, args.micro_batch_size, args.batches)
        else:
            for layout, abb in (("ours (uint16, raw)", False), ("ABB (int32, gzip)", True)):
                folder = os.path.join(work, "abb" if abb else "ours")
                os.makedirs(folder)
                for i in range(4):
                    write_random_shard(f"{folder}/train_shard_{i:03d}.hdf5", 6000, args.seq_len, 30522,
                                       max_predictions=20, seed=i, abb=abb)
                rates[layout] = loader_rate(folder, args.micro_batch_size, args.batches)
            rates["ours, dynamic masking"] = loader_rate(os.path.join(work, "ours"), args.micro_batch_size,
                                                         args.batches, dynamic_masking=True)
        if args.trainer_samples_per_s:
            trainer, source = args.trainer_samples_per_s, "given"
        else:
            trainer, source = tiny_trainer_rate(args.micro_batch_size, args.seq_len), "measured, tiny BERT on CPU"

    print(f"micro batch {args.micro_batch_size}, {args.seq_len} tokens, {args.batches} batches per measurement, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"trainer consumes {trainer:10.0f} samples/s ({source})")
    for name, (rate, epochs) in rates.items():
        print(f"loader {name:24s} {rate:10.0f} samples/s over {epochs + 1} epochs = {rate / trainer:7.1f}x the trainer")
    print(f"ratio: {min(r for r, _ in rates.values()) / trainer:.1f}x (slowest layout; goal >= 20x)")


if __name__ == "__main__":
    main()
