"""The trainer's data loader: ABB's shard-per-epoch reading, made resumable and rank-equal.

An *epoch* is one pass over one shard slot per rank (ABB: every epoch each rank reads one
shard file). Slots are the train files in a seeded order, each cut into ``ceil(world_size /
files)`` contiguous pieces, so that more ranks than files still read disjoint data; epoch
``e`` gives rank ``r`` slot ``(e * world_size + r) % slots``, which walks all slots evenly.

Every rank gets the same number of batches per epoch (ABB hangs when they differ): the
common count is the mean slot size (total train samples / slots). A rank whose slot is
larger reads a fresh random subset of it; a smaller slot is repeated in fresh orders. The
sample order is a pure function of (seed, epoch, rank), so a batch is a pure function of its
position (epoch, index): ``state_dict`` is that position for the *next batch the trainer
will consume*, whatever the prefetch thread has already built, and a restored loader
continues with exactly the same batches.
"""
from __future__ import annotations

import dataclasses
import math
import queue
import threading
from typing import Iterator

import numpy as np
import torch

from hpc_bert.data.dataset import DatasetInfo, check_dataset
from hpc_bert.data.hdf5io import read_rows
from hpc_bert.errors import UserError

__all__ = ["Batch", "PretrainingDataLoader", "check_dataset", "DatasetInfo"]
IGNORE_INDEX = -100
_STATE_KEYS = ("epoch", "index", "seed", "rank", "world_size", "micro_batch_size", "batches_per_epoch")


@dataclasses.dataclass
class Batch:
    epoch: int  # 0-based
    index: int  # batch index within the epoch
    last_in_epoch: bool
    tensors: dict[str, torch.Tensor]  # input_ids, attention_mask, token_type_ids, labels: LongTensor [B, L]


@dataclasses.dataclass(frozen=True)
class Slot:
    path: str
    start: int
    stop: int


def labels_from_static_mask(positions: np.ndarray, ids: np.ndarray, seq_len: int) -> np.ndarray:
    """[B, L] labels (-100 where not masked) from 0-padded masked_lm_positions / _ids.
    As ABB: a row's predictions end at its first 0 position ([CLS] is never masked)."""
    labels = np.full((len(positions), seq_len), IGNORE_INDEX, dtype=np.int64)
    valid = np.cumprod(positions != 0, axis=1).astype(bool)
    rows = np.broadcast_to(np.arange(len(positions))[:, None], positions.shape)
    labels[rows[valid], positions[valid].astype(np.int64)] = ids[valid]
    return labels


class PretrainingDataLoader:
    """Infinite iterator of ``Batch``; see the module docstring for the epoch contract."""

    def __init__(self, dataset_path: str, micro_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 42, max_seq_length: int | None = None, vocab_size: int | None = None,
                 dynamic_masking: bool = False, mlm_probability: float = 0.15, mask_token_id: int = 103,
                 special_token_ids=(0, 100, 101, 102, 103), prefetch: int = 2):
        if micro_batch_size < 1:
            raise UserError(f"micro batch size must be >= 1, got {micro_batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world size {world_size}: check the launcher's RANK/WORLD_SIZE")
        if prefetch < 0:
            raise UserError(f"prefetch must be >= 0, got {prefetch}")
        if dynamic_masking and not 0 < mlm_probability < 1:
            raise UserError(f"--mlm_probability must lie in (0, 1), got {mlm_probability}: e.g. 0.15")
        self.info: DatasetInfo = check_dataset(dataset_path, max_seq_length, vocab_size)
        self.micro_batch_size, self.rank, self.world_size, self.seed = micro_batch_size, rank, world_size, seed
        self.vocab_size, self.prefetch = vocab_size, prefetch
        self.dynamic_masking, self.mlm_probability = dynamic_masking, mlm_probability
        self.mask_token_id, self.special_token_ids = mask_token_id, np.asarray(sorted(special_token_ids))
        if dynamic_masking:
            self._check_dynamic_masking()
        self.slots = self._make_slots()
        self.slot_samples = self.info.num_train_samples // len(self.slots)
        self._batches = self.slot_samples // micro_batch_size
        if self._batches < 1:
            raise UserError(f"{self.info.num_train_samples} train samples over {len(self.slots)} shard slots "
                            f"give {self.slot_samples} samples per rank and epoch, fewer than the micro batch "
                            f"{micro_batch_size}: use a smaller micro batch, fewer ranks, or more data")
        self._position = (0, 0)
        self._generation = 0  # bumped by load_state_dict so a running iterator restarts there
        self._validation_cache: dict[tuple[int, int], list[dict]] = {}

    # ----- epoch plan: pure functions of (seed, epoch, rank) -----
    def _make_slots(self) -> list[Slot]:
        files = [s for s in self.info.train if s.num_samples > 0]
        order = np.random.default_rng([self.seed, 0x5107]).permutation(len(files))
        pieces = math.ceil(self.world_size / len(files))
        slots = []
        for piece in range(pieces):
            for i in order:
                n = files[i].num_samples
                start, stop = piece * n // pieces, (piece + 1) * n // pieces
                if start == stop:  # file smaller than the number of pieces: read it whole
                    start, stop = 0, n
                slots.append(Slot(files[i].path, start, stop))
        return slots

    def slot_of(self, epoch: int) -> Slot:
        """The shard slot this rank reads in ``epoch``."""
        return self.slots[(epoch * self.world_size + self.rank) % len(self.slots)]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Row offsets within ``slot_of(epoch)`` in the order this rank reads them."""
        slot = self.slot_of(epoch)
        size, need = slot.stop - slot.start, self._batches * self.micro_batch_size
        rng = np.random.default_rng([self.seed, epoch, self.rank, 0xE90C])
        rounds = [rng.permutation(size) for _ in range(max(1, -(-need // size)))]
        return np.concatenate(rounds)[:need]

    @property
    def batches_per_epoch(self) -> int:
        return self._batches

    @property
    def samples_per_epoch(self) -> int:
        """Samples per rank and epoch (batches_per_epoch x micro_batch_size)."""
        return self._batches * self.micro_batch_size

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

    def _load_slot(self, slot: Slot) -> dict[str, np.ndarray]:
        rows = read_rows(slot.path, slot.start, slot.stop)
        limit = self.vocab_size
        if limit is not None:  # ABB files carry no max id: check what is actually read
            top = int(max(rows["input_ids"].max(initial=0), rows["masked_lm_ids"].max(initial=0)))
            if top >= limit:
                raise UserError(f"shard {slot.path} holds token id {top} but the model's vocab has {limit} "
                                "ids: use the tokenizer the data was prepared with")
        if int(rows["masked_lm_positions"].max(initial=0)) >= self.info.max_seq_length:
            raise UserError(f"shard {slot.path} has masked_lm_positions beyond max_seq_length: re-create it")
        return rows

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

    def _batches_from(self, position: tuple[int, int], stop: threading.Event) -> Iterator[Batch]:
        """Batches from ``position`` on (runs in the prefetch thread when prefetch > 0)."""
        epoch, index = position
        cached_slot, rows = None, None
        while not stop.is_set():
            slot = self.slot_of(epoch)
            if slot != cached_slot:
                rows, cached_slot = self._load_slot(slot), slot
            order = self.epoch_order(epoch)
            while index < self._batches and not stop.is_set():
                b = self.micro_batch_size
                key = (epoch, self.rank, index) if self.dynamic_masking else None
                tensors = self._tensors(rows, order[index * b:(index + 1) * b], key)
                yield Batch(epoch, index, index == self._batches - 1, tensors)
                index += 1
            epoch, index = epoch + 1, 0

    def _next_position(self, batch: Batch) -> tuple[int, int]:
        return (batch.epoch + 1, 0) if batch.last_in_epoch else (batch.epoch, batch.index + 1)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            generation = self._generation
            source = _Prefetcher(self._batches_from, self._position, self.prefetch)
            try:
                while generation == self._generation:
                    batch = source.get()
                    # before yielding: while the trainer holds this batch, the next one is "next"
                    self._position = self._next_position(batch)
                    yield batch
            finally:
                source.close()

    # ----- checkpointing -----
    def state_dict(self) -> dict:
        epoch, index = self._position
        return {"epoch": epoch, "index": index, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "micro_batch_size": self.micro_batch_size,
                "batches_per_epoch": self._batches}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("epoch", "index") if k not in state]
        if missing:
            raise UserError(f"data loader state lacks {', '.join(missing)}: the checkpoint is damaged")
        mine = self.state_dict()
        changed = [k for k in _STATE_KEYS[2:] if k in state and k != "rank" and int(state[k]) != mine[k]]
        if changed:
            listing = ", ".join(f"{k} {state[k]} -> {mine[k]}" for k in changed)
            raise UserError(f"the data loader was saved with other settings ({listing}): resume with the "
                            "same seed, world size, micro batch and dataset")
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index < self._batches:
            raise UserError(f"data loader position epoch {epoch} batch {index} is outside the "
                            f"{self._batches} batches per epoch: the checkpoint does not match this dataset")
        self._position = (epoch, index)
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

    def _run(self) -> None:
        try:
            for item in self._generator:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # hand over to the consumer, which re-raises it
            while not self._stop.is_set():
                try:
                    self._queue.put(e, timeout=0.1)
                    return
                except queue.Full:
                    continue

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
