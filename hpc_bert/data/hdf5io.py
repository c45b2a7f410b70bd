"""HDF5 sample shards in ABB's layout: writing ours, inspecting and reading ours and ABB's.

Layout (one row per sample): ``input_ids``, ``input_mask``, ``segment_ids`` [N, L];
``masked_lm_positions``, ``masked_lm_ids`` [N, P], 0-padded (position 0 is [CLS], never
masked, so 0 marks padding); optional ``next_sentence_labels`` [N]. ABB writes int32/int8,
often gzip-compressed; we write uint16 ids (uint8 masks) uncompressed, because gzip makes
reads about 40x slower, plus attributes that make validation exact and cheap. Our shards are
appended block by block (``shard_writer``: resizable datasets in 1024-row chunks) so that a
writer never holds a whole shard; every write goes through hpc_bert.atomic.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from typing import Any, Iterator

import h5py
import numpy as np

from hpc_bert.atomic import atomic_output
from hpc_bert.errors import UserError

ROW_KEYS = ("input_ids", "input_mask", "segment_ids")
MASK_KEYS = ("masked_lm_positions", "masked_lm_ids")
REQUIRED_KEYS = ROW_KEYS + MASK_KEYS
SHARD_SUFFIXES = (".hdf5", ".h5", ".hdf")
# Without a max_token_id attribute (ABB files) only this many rows per file are scanned up
# front; the loader checks every part it loads, so a bad id still stops with a clear line.
ID_SCAN_ROWS = 8192


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    path: str
    split: str  # "train" or "test"
    num_samples: int
    max_seq_length: int
    max_predictions_per_seq: int
    max_token_id: int | None  # exact (our attribute) or from the scanned rows
    max_token_id_exact: bool
    id_dtype: str
    compressed: bool
    attrs: dict[str, Any]


def shard_split(name: str) -> str | None:
    """'train' / 'test' from a file name (ABB's rule: the word in the name), else None."""
    if not name.endswith(SHARD_SUFFIXES) or name.startswith("."):
        return None
    low = name.lower()
    if "train" in low:
        return "train"
    if "test" in low:
        return "test"
    return None


def list_shards(dataset_path: str) -> tuple[list[str], list[str]]:
    """(train files, test files) in ``dataset_path``, sorted by name."""
    if not dataset_path:
        raise UserError("no dataset path given: pass --dataset_path DIR (a folder made by "
                        "`python -m hpc_bert.data prepare`)")
    if not os.path.exists(dataset_path):
        raise UserError(f"dataset path {dataset_path} does not exist: pass the --output_dir of "
                        "`python -m hpc_bert.data prepare` as --dataset_path")
    if not os.path.isdir(dataset_path):
        raise UserError(f"dataset path {dataset_path} is a file: pass the folder that holds the HDF5 shards")
    train, test = [], []
    for name in sorted(os.listdir(dataset_path)):
        split = shard_split(name)
        if split and os.path.isfile(os.path.join(dataset_path, name)):
            (train if split == "train" else test).append(os.path.join(dataset_path, name))
    return train, test


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        # h5py: "Unable to synchronously open file (truncated file: eof = 96, sblock->...)"
        detail = re.search(r"\(([^()]*)\)", str(e))
        why = detail.group(1).split(",")[0] if detail else (str(e).splitlines() or ["unreadable"])[0][:120]
        raise UserError(f"shard {path} is truncated or not an HDF5 file ({why}): re-run "
                        "`python -m hpc_bert.data prepare` or copy the file again") from None


def inspect_shard(path: str, split: str, scan_rows: int | None = None) -> ShardInfo:
    """Check one shard's layout cheaply; raises UserError naming the file and the fix."""
    with _open(path) as f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise UserError(f"shard {path} lacks dataset(s) {', '.join(missing)}: it is not in ABB's "
                            "pretraining layout; re-create it with `python -m hpc_bert.data prepare`")
        shapes = {k: f[k].shape for k in REQUIRED_KEYS}
        if any(len(s) != 2 for s in shapes.values()):
            raise UserError(f"shard {path} has datasets that are not 2-D ({shapes}): re-create it")
        n, seq_len = shapes["input_ids"]
        preds = shapes["masked_lm_positions"][1]
        bad = [k for k in REQUIRED_KEYS if shapes[k][0] != n
               or shapes[k][1] != (seq_len if k in ROW_KEYS else preds)]
        if bad:
            raise UserError(f"shard {path} has inconsistent shapes ({', '.join(f'{k}={shapes[k]}' for k in bad)} "
                            f"vs input_ids={shapes['input_ids']}): the file is damaged; re-create it")
        try:
            if n:  # touch the last row: a cut-off file fails here rather than mid-training
                for k in REQUIRED_KEYS:
                    f[k][n - 1]
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            if "max_token_id" in attrs:
                max_id, exact = int(attrs["max_token_id"]), True
            elif n:
                rows = min(n, scan_rows or ID_SCAN_ROWS)
                max_id = int(max(f["input_ids"][:rows].max(), f["masked_lm_ids"][:rows].max()))
                exact = rows == n
            else:
                max_id, exact = None, True
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"shard {path} is corrupt ({str(e).splitlines()[0][:120]}): re-run "
                            "`python -m hpc_bert.data prepare` or copy the file again") from None
        return ShardInfo(path=path, split=split, num_samples=int(n), max_seq_length=int(seq_len),
                         max_predictions_per_seq=int(preds), max_token_id=max_id, max_token_id_exact=exact,
                         id_dtype=str(f["input_ids"].dtype), compressed=f["input_ids"].compression is not None,
                         attrs=attrs)


def read_rows(path: str, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Rows [start, stop) of every required dataset, as stored (no dtype conversion)."""
    with _open(path) as f:
        try:
            return {k: f[k][start:stop] for k in REQUIRED_KEYS}
        except (OSError, ValueError) as e:
            raise UserError(f"shard {path} is corrupt ({str(e).splitlines()[0][:120]}): re-run "
                            "`python -m hpc_bert.data prepare` or copy the file again") from None


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def position_dtype(seq_len: int) -> np.dtype:
    return np.dtype(np.uint16) if seq_len <= 65536 else np.dtype(np.int32)


def write_shard(path: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write a whole sample shard atomically: a crash never leaves a half file with a name
    the loader would pick up."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)  # contiguous, uncompressed: fast slicing
        for key, value in attrs.items():
            f.attrs[key] = value


class ShardAppender:
    """Rows appended to a sample shard in ABB's layout (resizable, chunked, uncompressed)."""

    CHUNK_ROWS = 1024  # 256 KB chunks of input_ids at 128 tokens: reads stay fast

    def __init__(self, f: h5py.File, seq_len: int, preds: int, vocab_size: int):
        self.rows, self.seq_len, self.attrs = 0, seq_len, {}
        ids, pos = id_dtype(vocab_size), position_dtype(seq_len)
        shapes = {"input_ids": (seq_len, ids), "input_mask": (seq_len, np.uint8), "segment_ids": (seq_len, np.uint8),
                  "masked_lm_positions": (preds, pos), "masked_lm_ids": (preds, ids),
                  "next_sentence_labels": (None, np.uint8)}  # no NSP; kept so ABB's reader accepts the file
        self.datasets = {}
        for key, (width, dtype) in shapes.items():
            tail = () if width is None else (width,)
            self.datasets[key] = f.create_dataset(key, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                                  chunks=(self.CHUNK_ROWS, *tail))

    def append(self, input_ids: np.ndarray, positions: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> None:
        """Rows [CLS] ... [SEP] pad, their mask positions / labels and content lengths."""
        n = len(input_ids)
        mask = (np.arange(self.seq_len)[None, :] < (lengths + 2)[:, None]).astype(np.uint8)
        values = {"input_ids": input_ids, "input_mask": mask, "segment_ids": np.zeros_like(mask),
                  "masked_lm_positions": positions, "masked_lm_ids": labels,
                  "next_sentence_labels": np.zeros(n, np.uint8)}
        for key, dset in self.datasets.items():
            dset.resize(self.rows + n, axis=0)
            dset[self.rows:] = values[key].astype(dset.dtype, copy=False)
        self.rows += n


@contextlib.contextmanager
def shard_writer(path: str, seq_len: int, preds: int, vocab_size: int) -> Iterator[ShardAppender]:
    """A shard written row block by row block, visible under ``path`` only once complete."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        writer = ShardAppender(f, seq_len, preds, vocab_size)
        yield writer
        for key, value in writer.attrs.items():
            f.attrs[key] = value


def read_attrs(path: str) -> dict[str, Any] | None:
    """A shard's attributes, or None when it cannot be opened (a foreign or damaged file)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except OSError:
        return None


_OUR_SHARD = re.compile(r"^(train|test)_shard_\d+\.hdf5$")


def our_shard_files(folder: str) -> list[str]:
    """Sample shards with the names this package writes (used to refuse mixing two runs)."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if _OUR_SHARD.match(n))
