"""The trainer's loader: ABB files, rank-equal epochs, exact resume, validation set."""
from __future__ import annotations

import itertools
import json
import tempfile

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hpc_bert.data.loader import PretrainingDataLoader
from hpc_bert.testing.synthetic import write_random_shard
from hpc_bert.errors import UserError

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_dataset(folder, train_sizes, test_sizes=(20,), seq_len=12, vocab_size=5000, abb=False):
    for i, n in enumerate(train_sizes):
        write_random_shard(f"{folder}/train_shard_{i:03d}.hdf5", n, seq_len, vocab_size, seed=i, abb=abb)
    for i, n in enumerate(test_sizes):
        write_random_shard(f"{folder}/test_shard_{i:03d}.hdf5", n, seq_len, vocab_size, seed=100 + i, abb=abb)
    return str(folder)


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def test_abb_layout_int32_int8_gzip_loads_like_ours(tmp_path):
    rng = np.random.default_rng(0)
    n, seq_len = 40, 10
    ids = rng.integers(1000, 5000, size=(n, seq_len))
    ids[:, 0], ids[:, -1] = 101, 102
    positions = np.tile(np.array([2, 5, 0]), (n, 1))  # two predictions, then 0-padding
    labels = np.where(positions > 0, ids[np.arange(n)[:, None], positions], 0)
    ids[:, [2, 5]] = 103
    for folder, (id_type, small, opts) in {"abb": (np.int32, np.int8, {"compression": "gzip"}),
                                           "ours": (np.uint16, np.uint8, {})}.items():
        (tmp_path / folder).mkdir()
        for split in ("training", "test"):  # ABB's names only need to contain train / test
            with h5py.File(tmp_path / folder / f"wiki_{split}_0.hdf5", "w") as f:
                f.create_dataset("input_ids", data=ids.astype(id_type), **opts)
                f.create_dataset("input_mask", data=np.ones((n, seq_len), small), **opts)
                f.create_dataset("segment_ids", data=np.zeros((n, seq_len), small), **opts)
                f.create_dataset("masked_lm_positions", data=positions.astype(id_type), **opts)
                f.create_dataset("masked_lm_ids", data=labels.astype(id_type), **opts)
                f.create_dataset("next_sentence_labels", data=np.zeros(n, small), **opts)
    abb = PretrainingDataLoader(str(tmp_path / "abb"), 8, max_seq_length=seq_len, vocab_size=30522)
    ours = PretrainingDataLoader(str(tmp_path / "ours"), 8, max_seq_length=seq_len, vocab_size=30522)
    assert abb.info.train[0].compressed and abb.info.train[0].id_dtype == "int32"
    for a, b in zip(take(abb, 12), take(ours, 12)):
        assert same(a.tensors, b.tensors)
        t = a.tensors
        assert all(v.dtype == torch.long and v.shape == (8, seq_len) for v in t.values())
        assert (t["labels"][:, [2, 5]] > 103).all() and (t["labels"][:, [0, 1, 3, 4, 6, 7, 8, 9]] == -100).all()
        assert (t["input_ids"][:, [2, 5]] == 103).all()
    assert same(abb.validation_batches(16, 100)[0], ours.validation_batches(16, 100)[0])


@FAST
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=5), world=st.integers(1, 5),
       micro=st.integers(1, 8))
def test_every_rank_gets_the_same_number_of_batches(sizes, world, micro):
    with tempfile.TemporaryDirectory() as tmp:
        path = make_dataset(tmp, sizes, seq_len=6)
        total = sum(sizes)
        if total == 0:
            with pytest.raises(UserError, match="hold no samples"):
                PretrainingDataLoader(path, micro, 0, world)
            return
        slots = max(1, -(-world // sum(1 for s in sizes if s))) * sum(1 for s in sizes if s)
        if total // slots < micro:
            event("smaller than one micro batch per slot")
            with pytest.raises(UserError, match="fewer than the micro batch"):
                PretrainingDataLoader(path, micro, 0, world)
            return
        event("loaded")
        counts = []
        for rank in range(world):
            loader = PretrainingDataLoader(path, micro, rank, world, prefetch=0)
            per_epoch = []
            for _epoch, batches in itertools.groupby(take(loader, 2 * loader.batches_per_epoch),
                                                    key=lambda b: b.epoch):
                batches = list(batches)
                assert [b.index for b in batches] == list(range(len(batches)))
                assert batches[-1].last_in_epoch and not any(b.last_in_epoch for b in batches[:-1])
                assert all(len(b.tensors["input_ids"]) == micro for b in batches)
                per_epoch.append(len(batches))
            counts.append(per_epoch)
        assert all(c == counts[0] for c in counts) and counts[0] == [counts[0][0]] * 2


@FAST
@given(stop_at=st.integers(0, 40), dynamic=st.booleans(), prefetch=st.integers(0, 3))
def test_stopped_and_restored_loader_continues_with_the_same_batches(stop_at, dynamic, prefetch):
    with tempfile.TemporaryDirectory() as tmp:
        path = make_dataset(tmp, [23, 30, 17], seq_len=8)
        kw = dict(rank=1, world_size=2, seed=3, dynamic_masking=dynamic, prefetch=prefetch)
        first = PretrainingDataLoader(path, 4, **kw)
        it = iter(first)
        for _ in range(stop_at):
            next(it)
        state = json.loads(json.dumps(first.state_dict()))  # small, JSON-able
        expected = [next(it) for _ in range(8)]
        it.close()
        restored = PretrainingDataLoader(path, 4, **kw)
        restored.load_state_dict(state)
        got = take(restored, 8)
        assert [(b.epoch, b.index) for b in got] == [(b.epoch, b.index) for b in expected]
        assert all(same(a.tensors, b.tensors) for a, b in zip(got, expected))


def test_position_counts_consumed_batches_not_prefetched_ones(tmp_path):
    loader = PretrainingDataLoader(make_dataset(tmp_path, [40, 40]), 4, prefetch=4)
    assert loader.state_dict()["epoch"] == 0 and loader.state_dict()["index"] == 0
    it = iter(loader)
    seen = []
    for _ in range(25):
        batch = next(it)
        seen.append(batch)
        state = loader.state_dict()
        assert (state["epoch"], state["index"]) == ((batch.epoch + 1, 0) if batch.last_in_epoch
                                                    else (batch.epoch, batch.index + 1))
    # rewinding a running iterator restarts it at the loaded position
    loader.load_state_dict({"epoch": seen[3].epoch, "index": seen[3].index})
    assert same(next(it).tensors, seen[3].tensors)
    assert same(next(it).tensors, seen[4].tensors)


def test_order_is_a_pure_function_of_seed_epoch_rank(tmp_path):
    path = make_dataset(tmp_path, [40, 40, 40])
    a = PretrainingDataLoader(path, 5, rank=1, world_size=2, seed=9)
    b = PretrainingDataLoader(path, 5, rank=1, world_size=2, seed=9, prefetch=0)
    c = PretrainingDataLoader(path, 5, rank=1, world_size=2, seed=10)
    batches_a, batches_b, batches_c = take(a, 30), take(b, 30), take(c, 30)
    assert all(same(x.tensors, y.tensors) for x, y in zip(batches_a, batches_b))
    assert not all(same(x.tensors, y.tensors) for x, y in zip(batches_a, batches_c))
    assert [a.slot_of(e).path[-20:] for e in range(3)] != [a.slot_of(0).path[-20:]] * 3
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(3))


def test_more_ranks_than_shards_read_disjoint_pieces(tmp_path):
    path = make_dataset(tmp_path, [50, 50])
    loaders = [PretrainingDataLoader(path, 4, rank=r, world_size=5, prefetch=0) for r in range(5)]
    assert len(loaders[0].slots) == 6 and len({x.batches_per_epoch for x in loaders}) == 1
    slots = [x.slot_of(0) for x in loaders]
    ranges = sorted((s.path, s.start, s.stop) for s in slots)
    for (p1, _, e1), (p2, s2, _) in zip(ranges, ranges[1:]):
        assert p1 != p2 or e1 <= s2  # no overlap within a file
    first_rows = [set(map(tuple, take(x, 1)[0].tensors["input_ids"].tolist())) for x in loaders]
    assert all(not (first_rows[i] & first_rows[j]) for i in range(5) for j in range(i + 1, 5))


def test_validation_set_is_fixed_and_split_across_ranks(tmp_path):
    path = make_dataset(tmp_path, [30, 30], test_sizes=(7, 6))
    runs = [PretrainingDataLoader(path, 4, rank=r, world_size=3, seed=s) for r in range(3) for s in (1, 2)]
    sets = {}
    for loader in runs:
        take(loader, 5)  # the training position does not matter
        batches = loader.validation_batches(2, 100)
        assert [len(b["input_ids"]) for b in batches] == [2, 2]  # 13 samples -> 12 usable, 4 per rank
        assert all(same(x, y) for x, y in zip(batches, loader.validation_batches(2, 100)))
        prior = sets.setdefault(loader.rank, batches)
        assert all(same(x, y) for x, y in zip(prior, batches))
    rows = [tuple(r) for rank in range(3) for b in sets[rank] for r in b["input_ids"].tolist()]
    assert len(set(rows)) == 12
    assert sum(len(b["input_ids"]) for b in runs[0].validation_batches(3, 6)) == 2


def test_dynamic_masking_is_deterministic_and_near_the_rate(tmp_path):
    path = make_dataset(tmp_path, [300, 300], seq_len=32)
    static = PretrainingDataLoader(path, 50, prefetch=0)
    dyn = PretrainingDataLoader(path, 50, dynamic_masking=True, mlm_probability=0.3)
    again = PretrainingDataLoader(path, 50, dynamic_masking=True, mlm_probability=0.3, prefetch=0)
    masked = candidates = 0
    for s, d, a in zip(take(static, 10), take(dyn, 10), take(again, 10)):
        assert same(d.tensors, a.tensors)
        st_t, dy = s.tensors, d.tensors
        original = torch.where(st_t["labels"] != -100, st_t["labels"], st_t["input_ids"])
        chosen = dy["labels"] != -100
        assert torch.equal(dy["labels"][chosen], original[chosen])  # labels are the real tokens
        specials = (original == 0) | ((original >= 100) & (original <= 103))
        assert not (chosen & specials).any()  # [PAD], [CLS], [SEP] ... are never masked
        assert torch.equal(dy["input_ids"][~chosen], original[~chosen])
        masked += int(chosen.sum())
        candidates += int((dy["attention_mask"].bool() & (original > 103)).sum())
    assert abs(masked / candidates - 0.3) < 0.02
