"""Tiny, real inputs for trainer tests: a WordPiece vocab and ABB-layout HDF5 shards."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import h5py
import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_vocab(path: str, n_words: int = 91) -> int:
    words = SPECIAL + [f"w{i}" for i in range(n_words)]
    with open(path, "w") as fh:
        fh.write("\n".join(words) + "\n")
    return len(words)


def write_shards(folder: str, vocab: int, n_train: int = 2, n_test: int = 1, per_shard: int = 48,
                 seq_len: int = 32, n_pred: int = 5, seed: int = 0, packing: str | None = None) -> None:
    """Random but learnable samples: token t+1 often follows t, so the MLM loss can fall.
    ``packing`` "full_sentences": every 7th body token is a [SEP] (a document boundary inside
    the row, never masked) and the shards record that packing, as `prepare` does."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = [f"train_shard_{i}.hdf5" for i in range(n_train)] + [f"test_shard_{i}.hdf5" for i in range(n_test)]
    for name in names:
        n = per_shard
        ids = np.zeros((n, seq_len), np.int32)
        mask = np.zeros((n, seq_len), np.int8)
        pos = np.zeros((n, n_pred), np.int32)
        lab = np.zeros((n, n_pred), np.int32)
        for r in range(n):
            length = int(rng.integers(seq_len // 2, seq_len + 1))
            start = int(rng.integers(5, vocab))
            body = [(start + k) % (vocab - 5) + 5 for k in range(length - 2)]
            if packing == "full_sentences":
                body = [3 if k % 7 == 6 else t for k, t in enumerate(body)]
            row = [2] + body + [3]
            ids[r, :length] = row
            mask[r, :length] = 1
            candidates = np.array([p for p in range(1, length - 1) if row[p] != 3])
            chosen = np.sort(rng.choice(candidates, size=n_pred, replace=False))
            pos[r] = chosen
            lab[r] = ids[r, chosen]
            ids[r, chosen] = 4  # [MASK]
        with h5py.File(os.path.join(folder, name), "w") as f:
            f["input_ids"] = ids
            f["input_mask"] = mask
            f["segment_ids"] = np.zeros_like(mask)
            f["masked_lm_positions"] = pos
            f["masked_lm_ids"] = lab
            f["next_sentence_labels"] = np.zeros(n, np.int8)
            if packing is not None:
                f.attrs["packing"] = packing


def vocab_and_shards(root, per_shard: int) -> tuple[str, str]:
    """A vocab file and two train + one test shard under ``root``: (shards dir, vocab file)."""
    os.makedirs(str(root), exist_ok=True)
    vocab = os.path.join(str(root), "vocab.txt")
    write_shards(os.path.join(str(root), "shards"), write_vocab(vocab), n_train=2, per_shard=per_shard)
    return os.path.join(str(root), "shards"), vocab


def tiny_flags(run_dir: str, data_dir: str, vocab_file: str, hours: float, **over) -> list[str]:
    flags = dict(tokenizer_name=vocab_file, dataset_path=data_dir, output_dir=run_dir,
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, lr=3e-3, train_batch_size=16, train_micro_batch_size_per_gpu=8,
                 warmup_proportion=0.1, total_training_time=hours, print_steps=1, seed=7,
                 validation_micro_batch=16, validation_max_samples=32, validation_epochs=2,
                 checkpoint_every_minutes=1000, tensorboard="false", progress_bar="false")
    flags.update(over)
    out = []
    for k, v in flags.items():
        out += [f"--{k}", str(v)]
    return out


def train(flags: list[str], env_extra: dict | None = None, timeout: float = 300, procs: int = 1):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    env.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    if procs == 1:
        cmd = [sys.executable, "-m", "hpc_bert.train", *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
               f"--master_port={env['MASTER_PORT']}", "-m", "hpc_bert.train", *flags]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# The simulated-clock schedule the trainer tests rehearse: markers at 0.3 and 0.6 of the budget, a
# validation after every epoch, a periodic checkpoint every 1.5 simulated minutes.
SIMULATED_SCHEDULE = dict(clock="simulated", finetune_time_markers="0.3,0.6", do_validation="true",
                          validation_epochs=1, checkpoint_every_minutes=1.5)


def simulated_flags(run_dir, inputs, hours: float, step_s: float, **over) -> list[str]:
    """tiny_flags for ``inputs`` (shards, vocab) under SIMULATED_SCHEDULE, ``over`` winning."""
    data, vocab = inputs
    return tiny_flags(str(run_dir), data, vocab, hours,
                      **{**SIMULATED_SCHEDULE, "simulated_step_seconds": step_s, **over})


def final_weights(run_dir) -> dict:
    """The model weights of the newest training checkpoint (DeepSpeed's rank-0 model file)."""
    import json
    import torch
    tag = json.load(open(os.path.join(run_dir, "checkpoints", "latest.json")))["tag"]
    return torch.load(os.path.join(run_dir, "checkpoints", tag, "mp_rank_00_model_states.pt"),
                      weights_only=True)["module"]


@contextlib.contextmanager
def small_disk(path, size: int | str):
    """A tmpfs of ``size`` mounted at ``path`` (a file system that fills up); unmounted afterwards.
    Mounting needs root, as CI runs: skipped otherwise."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
