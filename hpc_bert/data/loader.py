"""The trainer's data loader: one global sample order, resumable on any number of ranks.

The order of training samples is a pure function of (seed, global sample index), so a run
resumed on another world size sees the same global batches in the same order. Global index
``i`` lies in epoch ``i // N`` (N = all train samples; an *epoch* is one pass over them).
Each epoch walks the *chunks* (contiguous runs of at most ``CHUNK_ROWS`` rows of one shard
file) in a seeded order and the rows of each chunk in a seeded order, so reading stays
sequential: a rank reads a whole chunk with one contiguous HDF5 read and keeps it while its
rows are used (every rank reads the chunks its rows fall in, i.e. ABB's one-file-at-a-time
reading with a bounded buffer, not one random row per sample).

A *round* is one micro batch on every rank: ``world_size x micro_batch_size`` consecutive
global indices, rank ``r`` taking the ``r``-th micro batch, so every rank gets the same
number of batches, always. The state is one integer, the global index of the next sample
the trainer will consume (whatever the prefetch thread has already built); at an optimizer
step boundary it is a multiple of the global batch, whatever the world size.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import queue
import threading
from collections import OrderedDict
from typing import Iterator

import numpy as np
import torch

from hpc_bert.data.dataset import DatasetInfo, check_dataset
from hpc_bert.data.hdf5io import read_rows
from hpc_bert.errors import UserError

__all__ = ["Batch", "PretrainingDataLoader", "check_dataset", "DatasetInfo", "sample_ids_digest"]
IGNORE_INDEX = -100
CHUNK_ROWS = 4096  # rows read at once; part of the order (saved in the state, checked on load)
ORDER_VERSION = 2  # 1 was the per-(epoch, rank) shard-slot order
_CACHED_CHUNKS = 3


@dataclasses.dataclass
class Batch:
    epoch: int  # 0-based epoch of the round's first sample
    index: int  # global round number (world_size x micro samples per round)
    last_in_epoch: bool  # the round consumed the last sample of an epoch
    tensors: dict[str, torch.Tensor]  # input_ids, attention_mask, token_type_ids, labels: LongTensor [B, L]
    round_sample_ids: np.ndarray  # dataset row ids of the whole round, all ranks, in order


@dataclasses.dataclass(frozen=True)
class Chunk:
    path: str
    start: int
    stop: int
    first_id: int  # dataset row id of row ``start`` (ids number all train rows, files in name order)


def sample_ids_digest(ids) -> str:
    """A short hash of a sequence of dataset row ids (e.g. one optimizer step's global batch)."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def labels_from_static_mask(positions: np.ndarray, ids: np.ndarray, seq_len: int) -> np.ndarray:
    """[B, L] labels (-100 where not masked) from 0-padded masked_lm_positions / _ids.
    As ABB: a row's predictions end at its first 0 position ([CLS] is never masked)."""
    labels = np.full((len(positions), seq_len), IGNORE_INDEX, dtype=np.int64)
    valid = np.cumprod(positions != 0, axis=1).astype(bool)
    rows = np.broadcast_to(np.arange(len(positions))[:, None], positions.shape)
    labels[rows[valid], positions[valid].astype(np.int64)] = ids[valid]
    return labels


class PretrainingDataLoader:
    """Infinite iterator of ``Batch``; see the module docstring for the order contract."""

    def __init__(self, dataset_path: str, micro_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 42, max_seq_length: int | None = None, vocab_size: int | None = None,
                 dynamic_masking: bool = False, mlm_probability: float = 0.15, mask_token_id: int = 103,
                 special_token_ids=(0, 100, 101, 102, 103), prefetch: int = 2, info: DatasetInfo | None = None):
        if micro_batch_size < 1:
            raise UserError(f"micro batch size must be >= 1, got {micro_batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world size {world_size}: check the launcher's RANK/WORLD_SIZE")
        if prefetch < 0:
            raise UserError(f"prefetch must be >= 0, got {prefetch}")
        if dynamic_masking and not 0 < mlm_probability < 1:
            raise UserError(f"--mlm_probability must lie in (0, 1), got {mlm_probability}: e.g. 0.15")
        # ``info``: the caller already checked the shards (the trainer does, before anything expensive)
        self.info: DatasetInfo = info or check_dataset(dataset_path, max_seq_length, vocab_size)
        self.micro_batch_size, self.rank, self.world_size, self.seed = micro_batch_size, rank, world_size, seed
        self.vocab_size, self.prefetch = vocab_size, prefetch
        self.dynamic_masking, self.mlm_probability = dynamic_masking, mlm_probability
        self.mask_token_id, self.special_token_ids = mask_token_id, np.asarray(sorted(special_token_ids))
        if dynamic_masking:
            self._check_dynamic_masking()
        self.chunks = self._make_chunks()
        self.num_samples = sum(c.stop - c.start for c in self.chunks)
        self.round_size = world_size * micro_batch_size
        if self.round_size > self.num_samples:
            raise UserError(f"{self.num_samples} train samples are fewer than one micro batch on every rank "
                            f"({world_size} x {micro_batch_size}): use a smaller micro batch, fewer ranks, "
                            "or more data")
        self._position = 0  # global index of the next sample the trainer consumes
        self._generation = 0  # bumped by load_state_dict so a running iterator restarts there
        self._epoch_plans: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._validation_cache: dict[tuple[int, int], list[dict]] = {}

    # ----- the global order: pure functions of (seed, global index) -----
    def _make_chunks(self) -> list[Chunk]:
        chunks, first_id = [], 0
        for shard in self.info.train:
            for start in range(0, shard.num_samples, CHUNK_ROWS):
                chunks.append(Chunk(shard.path, start, min(start + CHUNK_ROWS, shard.num_samples), first_id + start))
            first_id += shard.num_samples
        return chunks

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk indices in the order epoch ``epoch`` reads them, global offset where each begins)."""
        if epoch not in self._epoch_plans:
            order = np.random.default_rng([self.seed, epoch, 0x5107]).permutation(len(self.chunks))
            sizes = np.array([self.chunks[c].stop - self.chunks[c].start for c in order], dtype=np.int64)
            self._epoch_plans[epoch] = (order, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
            while len(self._epoch_plans) > 2:
                self._epoch_plans.popitem(last=False)
        return self._epoch_plans[epoch]

    @functools.lru_cache(maxsize=8)  # a round touches one or two chunks: keep their orders
    def row_order(self, epoch: int, chunk: int) -> np.ndarray:
        """Row offsets within chunk ``chunk`` in the order epoch ``epoch`` reads them."""
        c = self.chunks[chunk]
        return np.random.default_rng([self.seed, epoch, chunk, 0xE90C]).permutation(c.stop - c.start)

    def locate(self, start: int, stop: int) -> list[tuple[int, int, np.ndarray]]:
        """Global indices [start, stop) as runs of (epoch, chunk, row offsets within the chunk)."""
        runs, i = [], start
        while i < stop:
            epoch, offset = divmod(i, self.num_samples)
            order, begins = self.epoch_plan(epoch)
            k = int(np.searchsorted(begins, offset, side="right")) - 1
            chunk = int(order[k])
            size = self.chunks[chunk].stop - self.chunks[chunk].start
            lo = offset - int(begins[k])
            take = min(size - lo, stop - i)
            runs.append((epoch, chunk, self.row_order(epoch, chunk)[lo:lo + take]))
            i += take
        return runs

    def sample_ids(self, start: int, stop: int) -> np.ndarray:
        """Dataset row ids of global indices [start, stop)."""
        parts = [self.chunks[c].first_id + rows for _e, c, rows in self.locate(start, stop)]
        return np.concatenate(parts).astype(np.int64)

    # ----- batches -----
    def _check_dynamic_masking(self) -> None:
        recorded = self.info.special_ids.get("mask_token_id")
        if recorded is not None and recorded != self.mask_token_id:
            raise UserError(f"mask_token_id {self.mask_token_id} differs from the shards' [MASK] id {recorded}: "
                            "pass the tokenizer's mask_token_id")
        self._random_vocab = self.info.tokenizer_vocab_size or self.vocab_size
        if self._random_vocab is None:
            raise UserError("--dynamic_masking needs the vocab size to draw random tokens and these shards "
                            "do not record it: pass the model's vocab_size")

    def _read_chunk(self, epoch: int, chunk: int) -> dict[str, np.ndarray]:
        c = self.chunks[chunk]
        rows = read_rows(c.path, c.start, c.stop)
        limit = self.vocab_size
        if limit is not None:  # ABB files carry no max id: check what is actually read
            top = int(max(rows["input_ids"].max(initial=0), rows["masked_lm_ids"].max(initial=0)))
            if top >= limit:
                raise UserError(f"shard {c.path} holds token id {top} but the model's vocab has {limit} "
                                "ids: use the tokenizer the data was prepared with")
        if int(rows["masked_lm_positions"].max(initial=0)) >= self.info.max_seq_length:
            raise UserError(f"shard {c.path} has masked_lm_positions beyond max_seq_length: re-create it")
        tensors = self._tensors(rows, np.arange(c.stop - c.start), (epoch, chunk) if self.dynamic_masking else None)
        return {k: v.numpy() for k, v in tensors.items()}

    def _tensors(self, rows: dict[str, np.ndarray], select: np.ndarray, rng_key: tuple[int, ...] | None) -> dict:
        input_ids = rows["input_ids"][select].astype(np.int64)
        attention = rows["input_mask"][select].astype(np.int64)
        segments = rows["segment_ids"][select].astype(np.int64)
        positions = rows["masked_lm_positions"][select]
        labels = labels_from_static_mask(positions, rows["masked_lm_ids"][select], input_ids.shape[1])
        if rng_key is not None:
            input_ids, labels = self._dynamic_mask(input_ids, labels, attention, rng_key)
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention),
                "token_type_ids": torch.from_numpy(segments), "labels": torch.from_numpy(labels)}

    def _dynamic_mask(self, input_ids, labels, attention, rng_key):
        """Undo the static mask, then draw a new one (HF-style Bernoulli per token, 80/10/10)."""
        original = np.where(labels != IGNORE_INDEX, labels, input_ids)
        rng = np.random.default_rng([self.seed, *rng_key, 0xD1A5])
        candidates = (attention == 1) & ~np.isin(original, self.special_token_ids)
        chosen = candidates & (rng.random(original.shape) < self.mlm_probability)
        draw = rng.random(original.shape)
        random_ids = rng.integers(0, self._random_vocab, size=original.shape)
        masked = np.where(chosen & (draw < 0.8), self.mask_token_id, original)
        masked = np.where(chosen & (draw >= 0.9), random_ids, masked)
        return masked, np.where(chosen, original, IGNORE_INDEX)

    def _batches_from(self, position: int, stop: threading.Event) -> Iterator[Batch]:
        """Batches from global index ``position`` on (runs in the prefetch thread when prefetch > 0)."""
        cache: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        b = self.micro_batch_size
        while not stop.is_set():
            mine = position + self.rank * b
            parts = []
            for epoch, chunk, rows in self.locate(mine, mine + b):
                key = (epoch if self.dynamic_masking else 0, chunk)
                if key not in cache:
                    cache[key] = self._read_chunk(epoch, chunk)
                    while len(cache) > _CACHED_CHUNKS:
                        cache.popitem(last=False)
                parts.append({k: v[rows] for k, v in cache[key].items()})
            tensors = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
            end = position + self.round_size
            n = self.num_samples
            yield Batch(position // n, position // self.round_size, end // n > position // n, tensors,
                        self.sample_ids(position, end))
            position = end

    def __iter__(self) -> Iterator[Batch]:
        while True:
            generation = self._generation
            source = _Prefetcher(self._batches_from, self._position, self.prefetch)
            try:
                while generation == self._generation:
                    batch = source.get()
                    # before yielding: while the trainer holds this batch, the next one is "next"
                    self._position = (batch.index + 1) * self.round_size
                    yield batch
            finally:
                source.close()

    # ----- checkpointing -----
    def state_dict(self) -> dict:
        """World-size free: the global position and what defines the order."""
        return {"order_version": ORDER_VERSION, "next_sample": self._position, "seed": self.seed,
                "num_samples": self.num_samples, "chunk_rows": CHUNK_ROWS}

    def load_state_dict(self, state: dict) -> None:
        if "next_sample" not in state:
            raise UserError("the data loader state has no global position (saved by an older hpc_bert, whose "
                            "order was per rank): finish that run with the version that started it")
        mine = self.state_dict()
        changed = [k for k in ("order_version", "seed", "num_samples", "chunk_rows")
                   if k in state and int(state[k]) != mine[k]]
        if changed:
            listing = ", ".join(f"{k} {state[k]} -> {mine[k]}" for k in changed)
            raise UserError(f"the data loader was saved with another sample order ({listing}): resume with the "
                            "same --seed and dataset")
        position = int(state["next_sample"])
        if position < 0 or position % self.round_size:
            raise UserError(f"data loader position {position} is not a whole number of rounds of "
                            f"{self.world_size} x {self.micro_batch_size} samples: the checkpoint does not "
                            "match this batch geometry")
        self._position = position
        self._generation += 1

    # ----- validation -----
    def validation_batches(self, micro_batch_size: int, max_samples: int) -> list[dict]:
        """The fixed held-out set: the first ``max_samples`` rows of the test shards (name
        order), truncated to a multiple of world_size and dealt round-robin to the ranks, so
        every rank has the same number of batches; static masks, the same on every call."""
        key = (micro_batch_size, max_samples)
        if key not in self._validation_cache:
            self._validation_cache[key] = self._build_validation(micro_batch_size, max_samples)
        return self._validation_cache[key]

    def _build_validation(self, micro_batch_size: int, max_samples: int) -> list[dict]:
        if micro_batch_size < 1 or max_samples < 1:
            raise UserError("validation micro batch and max samples must be >= 1")
        if not self.info.test:
            raise UserError(f"no test shards in {self.info.dataset_path} (HDF5 files with 'test' in the name): "
                            "prepare with --num_test_shards 1 --frac_test 0.05, or turn off --do_validation")
        total = min(max_samples, self.info.num_test_samples)
        usable = total // self.world_size * self.world_size
        if usable == 0:
            raise UserError(f"the test shards hold {self.info.num_test_samples} samples, fewer than the "
                            f"{self.world_size} ranks: hold out more text (--frac_test)")
        parts, need = [], usable
        for shard in self.info.test:
            if need == 0:
                break
            take = min(need, shard.num_samples)
            parts.append(read_rows(shard.path, 0, take))
            need -= take
        preds = max(p["masked_lm_positions"].shape[1] for p in parts)
        rows = {}
        for k in parts[0]:
            arrays = [p[k] for p in parts]
            if k.startswith("masked_lm"):  # files may differ in max_predictions_per_seq
                arrays = [np.pad(a, ((0, 0), (0, preds - a.shape[1]))) for a in arrays]
            rows[k] = np.concatenate(arrays)
        mine = np.arange(self.rank, usable, self.world_size)
        return [self._tensors(rows, mine[i:i + micro_batch_size], None)
                for i in range(0, len(mine), micro_batch_size)]


class _Prefetcher:
    """Pulls from a batch generator, in a daemon thread when ``depth`` > 0. Errors raised
    in the thread (e.g. a corrupt shard) are re-raised by ``get`` in the trainer's thread."""

    def __init__(self, make, position, depth: int):
        self._stop = threading.Event()
        self._generator = make(position, self._stop)
        self._queue: queue.Queue | None = None
        if depth > 0:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="hpc_bert-prefetch", daemon=True)
            self._thread.start()

    def _put(self, item) -> bool:
        """Hand ``item`` to the consumer, waiting for room; False when asked to stop first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return not self._stop.is_set()
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._generator:
                if not self._put(item):
                    return
        except BaseException as e:  # hand over to the consumer, which re-raises it
            self._put(e)

    def get(self) -> Batch:
        if self._queue is None:
            return next(self._generator)
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._queue is None:
            self._generator.close()
        else:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
