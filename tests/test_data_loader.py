"""The trainer's loader: ABB files, one global order on any world size, exact resume, validation set."""
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


def round_rows(loaders, n):
    """The first ``n`` rounds: per round, the ranks' input_ids stacked in rank order."""
    per_rank = [take(x, n) for x in loaders]
    return [np.concatenate([r[i].tensors["input_ids"].numpy() for r in per_rank]) for i in range(n)], per_rank


@FAST
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=5), world=st.integers(1, 5),
       micro=st.integers(1, 8))
def test_every_rank_gets_the_same_number_of_batches_and_an_epoch_is_a_permutation(sizes, world, micro):
    with tempfile.TemporaryDirectory() as tmp:
        path = make_dataset(tmp, sizes, seq_len=6)
        total = sum(sizes)
        if total == 0:
            with pytest.raises(UserError, match="hold no samples"):
                PretrainingDataLoader(path, micro, 0, world)
            return
        if total < world * micro:
            event("fewer samples than one round")
            with pytest.raises(UserError, match="fewer than one micro batch on every rank"):
                PretrainingDataLoader(path, micro, 0, world)
            return
        event("loaded")
        loaders = [PretrainingDataLoader(path, micro, r, world, prefetch=0) for r in range(world)]
        rounds = -(-2 * total // (world * micro))  # at least two epochs
        _stacked, per_rank = round_rows(loaders, rounds)
        for batches in per_rank:  # every rank: full micro batches, the same rounds, the same epoch ends
            assert [b.index for b in batches] == list(range(rounds))
            assert all(len(b.tensors["input_ids"]) == micro for b in batches)
            assert [b.last_in_epoch for b in batches] == [b.last_in_epoch for b in per_rank[0]]
        assert sum(b.last_in_epoch for b in per_rank[0]) == (rounds * world * micro) // total
        ids = loaders[0].sample_ids(0, 2 * total)
        assert sorted(ids[:total]) == list(range(total)) and sorted(ids[total:]) == list(range(total))
        assert not np.array_equal(ids[:total], ids[total:]) or total < 4


@FAST
@given(worlds=st.tuples(st.integers(1, 4), st.integers(1, 4)), micro=st.integers(1, 3), dynamic=st.booleans())
def test_global_order_is_the_same_on_any_number_of_ranks(worlds, micro, dynamic):
    with tempfile.TemporaryDirectory() as tmp:
        path = make_dataset(tmp, [23, 30, 17], seq_len=8)
        samples = 72  # whole rounds for 1..4 ranks x micro 1..3; 70 samples a epoch, so it crosses one
        a, b = ([PretrainingDataLoader(path, micro, r, w, seed=5, dynamic_masking=dynamic, prefetch=1)
                 for r in range(w)] for w in worlds)
        rows_a, per_a = round_rows(a, samples // (worlds[0] * micro))
        rows_b, per_b = round_rows(b, samples // (worlds[1] * micro))
        assert np.array_equal(np.concatenate(rows_a), np.concatenate(rows_b))
        ids_a = np.concatenate([x.round_sample_ids for x in per_a[0]])
        ids_b = np.concatenate([x.round_sample_ids for x in per_b[0]])
        assert np.array_equal(ids_a, ids_b) and len(ids_a) == samples


@FAST
@given(stop_at=st.integers(0, 20), dynamic=st.booleans(), prefetch=st.integers(0, 3), resume_world=st.sampled_from([1, 2, 4]))
def test_stopped_and_restored_loader_continues_with_the_same_samples_on_another_world_size(
        stop_at, dynamic, prefetch, resume_world):
    with tempfile.TemporaryDirectory() as tmp:
        path = make_dataset(tmp, [23, 30, 17], seq_len=8)
        first = [PretrainingDataLoader(path, 2, r, 2, seed=3, dynamic_masking=dynamic, prefetch=prefetch)
                 for r in range(2)]
        its = [iter(x) for x in first]
        for _ in range(2 * stop_at):  # stop after whole steps of a global batch of 8 (2 rounds of 2 x 2)
            for it in its:
                next(it)
        states = [json.loads(json.dumps(x.state_dict())) for x in first]  # small, JSON-able
        assert states[0] == states[1]  # the state is global: any rank's restores any rank
        expected = np.concatenate([np.concatenate([next(it).tensors["input_ids"].numpy() for it in its])
                                   for _ in range(4)])
        for it in its:
            it.close()
        restored = [PretrainingDataLoader(path, 8 // (2 * resume_world) or 1, r, resume_world, seed=3,
                                          dynamic_masking=dynamic, prefetch=prefetch) for r in range(resume_world)]
        for x in restored:
            x.load_state_dict(states[0])
        rounds = 16 // restored[0].round_size
        got, _ = round_rows(restored, rounds)
        assert np.array_equal(np.concatenate(got), expected)


def test_position_counts_consumed_batches_not_prefetched_ones(tmp_path):
    loader = PretrainingDataLoader(make_dataset(tmp_path, [40, 40]), 4, prefetch=4)
    assert loader.state_dict()["next_sample"] == 0
    it = iter(loader)
    seen = []
    for _ in range(25):
        batch = next(it)
        seen.append(batch)
        assert loader.state_dict()["next_sample"] == (batch.index + 1) * 4
    # rewinding a running iterator restarts it at the loaded position
    loader.load_state_dict({"next_sample": 3 * 4})
    assert same(next(it).tensors, seen[3].tensors)
    assert same(next(it).tensors, seen[4].tensors)


def test_order_is_a_pure_function_of_seed_and_global_index(tmp_path):
    path = make_dataset(tmp_path, [40, 40, 40])
    a = PretrainingDataLoader(path, 5, rank=1, world_size=2, seed=9)
    b = PretrainingDataLoader(path, 5, rank=1, world_size=2, seed=9, prefetch=0)
    c = PretrainingDataLoader(path, 5, rank=1, world_size=2, seed=10)
    batches_a, batches_b, batches_c = take(a, 30), take(b, 30), take(c, 30)
    assert all(same(x.tensors, y.tensors) for x, y in zip(batches_a, batches_b))
    assert not all(same(x.tensors, y.tensors) for x, y in zip(batches_a, batches_c))
    assert not np.array_equal(a.sample_ids(0, 120), a.sample_ids(120, 240))  # epochs are reshuffled


def test_big_files_are_read_in_bounded_chunks(tmp_path):
    from hpc_bert.data.loader import CHUNK_ROWS
    path = make_dataset(tmp_path, [CHUNK_ROWS + 100, 30], seq_len=4)
    loader = PretrainingDataLoader(path, 64, prefetch=0)
    assert [(c.start, c.stop) for c in loader.chunks] == [(0, CHUNK_ROWS), (CHUNK_ROWS, CHUNK_ROWS + 100), (0, 30)]
    total = CHUNK_ROWS + 130
    assert sorted(loader.sample_ids(0, total)) == list(range(total))
    # a round's rows come from one or two chunks, not from rows scattered over the files
    assert all(len(loader.locate(i, i + 64)) <= 2 for i in range(0, total - 64, 64))


def test_a_loader_state_of_another_order_fails_with_one_line(tmp_path):
    path = make_dataset(tmp_path, [40, 40])
    loader = PretrainingDataLoader(path, 4, seed=1)
    with pytest.raises(UserError, match="older hpc_bert"):
        loader.load_state_dict({"epoch": 1, "index": 2})
    with pytest.raises(UserError, match="seed 2 -> 1"):
        loader.load_state_dict({**loader.state_dict(), "seed": 2})
    with pytest.raises(UserError, match="not a whole number of rounds"):
        PretrainingDataLoader(path, 4, 0, 2, seed=1).load_state_dict({**loader.state_dict(), "next_sample": 4})


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
