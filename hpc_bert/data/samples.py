"""Text shards -> masked-LM samples in HDF5, one output file per text shard, streamed, in parallel.

Per shard, chunk by chunk (a few MB of text, so memory does not grow with the shard):
tokenize every sentence once with the fast (Rust) tokenizer, pack rows (hpc_bert.data.packing),
and for each of ``dup_factor`` passes draw a fresh static mask; the chunk's rows of all passes
are shuffled together and appended to the shard. Everything random is seeded by (seed, split,
shard index, pass) and the chunking depends only on the text, so results do not depend on the
number of workers. Test shards get one pass: duplicates would only repeat held-out text.

Each shard is written to a hidden temp file and renamed when complete (hpc_bert.atomic), with
a key of the settings, tokenizer and text shard that made it: a re-run skips the shards whose
key matches, so a killed run resumes where it stopped and never shows a partial shard.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random

import numpy as np

from hpc_bert.atomic import file_sha256, remove_stale_temps
from hpc_bert.data.config import SampleConfig
from hpc_bert.data.hdf5io import our_shard_files, read_attrs, shard_writer
from hpc_bert.data.encoding import SentenceEncoder
from hpc_bert.data.packing import FullSentencePacker, SpecialIds, build_rows, mask_rows, pack_document
from hpc_bert.data.parallel import ordered_map
from hpc_bert.data.progress import progress
from hpc_bert.data.shards import iter_text_shard
from hpc_bert.errors import UserError

SPLIT_CODE = {"train": 0, "test": 1}
MIN_BYTES_PER_WORKER = 4 << 20
CHUNK_CHARS = 2 << 20  # text per tokenize/pack/mask step: bounds a worker's memory
STAT_KEYS = ("documents", "tokens", "masked", "real_tokens", "padding")


@dataclasses.dataclass(frozen=True)
class ShardJob:
    text_path: str
    out_path: str
    split: str
    index: int
    tokenizer_json: str
    ids: SpecialIds
    config: SampleConfig
    key: str  # settings + tokenizer + text shard: equal keys, equal bytes


@functools.lru_cache(maxsize=2)
def _encoder(tokenizer_json: str, sep_id: int) -> SentenceEncoder:
    """One encoder per process and tokenizer: its piece cache serves every shard the process makes."""
    return SentenceEncoder(tokenizer_json, sep_id)


def _rows_of_chunk(job: ShardJob, flat, doc_bounds, packer, pack_rngs, mask_rngs, passes):
    """Masked rows (input_ids, positions, labels, lengths) of all passes over one chunk."""
    cfg, ids = job.config, job.ids
    parts = []
    if packer is not None:
        stream, slices = packer.add(flat, doc_bounds) if flat is not None else packer.finish()
        if not len(slices):
            return parts
        rows, lengths = build_rows(stream, slices, cfg.max_seq_length, ids)
        for dup in range(passes):  # same rows, fresh masks
            parts.append((*mask_rows(rows, lengths, cfg, ids, mask_rngs[dup]), lengths))
        return parts
    for dup in range(passes):
        slices: list[tuple[int, int]] = []
        for bounds in doc_bounds:
            if bounds[-1] > bounds[0]:
                pack_document(bounds, cfg.max_seq_length - 2, cfg.short_seq_prob, pack_rngs[dup], slices)
        if slices:
            rows, lengths = build_rows(flat, np.asarray(slices, dtype=np.int64), cfg.max_seq_length, ids)
            parts.append((*mask_rows(rows, lengths, cfg, ids, mask_rngs[dup]), lengths))
    return parts


def make_sample_shard(job: ShardJob) -> dict:
    """Create one HDF5 sample shard from one text shard; returns its counts."""
    cfg, ids = job.config, job.ids
    seq_len = cfg.max_seq_length
    passes = cfg.dup_factor if job.split == "train" else 1
    key = (cfg.seed, SPLIT_CODE[job.split], job.index)
    pack_rngs = [random.Random("pack:" + ":".join(map(str, (*key, dup)))) for dup in range(passes)]
    mask_rngs = [np.random.default_rng([*key, dup]) for dup in range(passes)]
    order_rng = np.random.default_rng([*key, 1 << 20])  # mixes passes and documents within a chunk
    packer = FullSentencePacker(seq_len - 2, ids.sep) if cfg.packing == "full_sentences" else None
    stats = dict.fromkeys(STAT_KEYS, 0)
    max_id = 0

    def chunks():
        for docs in iter_text_shard(job.text_path, CHUNK_CHARS):
            flat, bounds = _encoder(job.tokenizer_json, ids.sep).encode(docs)
            stats["documents"] += len(docs)
            stats["tokens"] += int(len(flat))
            yield flat, bounds
        if packer is not None:
            yield None, None  # flush the packer's last row

    with shard_writer(job.out_path, seq_len, cfg.max_predictions_per_seq, ids.vocab_size) as writer:
        for flat, bounds in chunks():
            parts = _rows_of_chunk(job, flat, bounds, packer, pack_rngs, mask_rngs, passes)
            if not parts:
                continue
            order = order_rng.permutation(sum(len(p[0]) for p in parts))
            input_ids, positions, labels, lengths = (np.concatenate([p[i] for p in parts])[order] for i in range(4))
            writer.append(input_ids, positions, labels, lengths)
            stats["masked"] += int((positions > 0).sum())
            stats["real_tokens"] += int((lengths + 2).sum())
            max_id = max(max_id, int(input_ids.max(initial=0)), int(labels.max(initial=0)))
        stats["padding"] = writer.rows * seq_len - stats["real_tokens"]
        writer.attrs.update({
            "format": "hpc_bert-1", "max_seq_length": seq_len, "vocab_size": ids.vocab_size,
            "max_predictions_per_seq": cfg.max_predictions_per_seq, "masked_lm_prob": cfg.masked_lm_prob,
            "dup_factor": passes, "short_seq_prob": cfg.short_seq_prob, "packing": cfg.packing, "seed": cfg.seed,
            "max_token_id": max_id, "pad_token_id": ids.pad, "cls_token_id": ids.cls, "sep_token_id": ids.sep,
            "mask_token_id": ids.mask, "source": os.path.basename(job.text_path), "prepare_key": job.key,
            "stat_samples": writer.rows, **{f"stat_{k}": v for k, v in stats.items()}})
        samples = writer.rows
    return {"file": os.path.basename(job.out_path), "split": job.split, "samples": samples, **stats}


def shard_stats(path: str) -> dict | None:
    """The counts a complete shard recorded, with its key; None for a file without them."""
    attrs = read_attrs(path)
    if attrs is None or "prepare_key" not in attrs:
        return None
    name = os.path.basename(path)
    return {"file": name, "split": name.split("_", 1)[0], "key": attrs["prepare_key"],
            "samples": int(attrs["stat_samples"]), **{k: int(attrs[f"stat_{k}"]) for k in STAT_KEYS}}


def plan_jobs(text_shards: list[str], output_dir: str, tokenizer, config: SampleConfig,
              only: set[str] | None = None) -> list[ShardJob]:
    """One job per text shard (``only``: these text shard names), keyed by what makes its bytes."""
    if not text_shards:
        raise UserError("no text shards to turn into samples: run `python -m hpc_bert.data shard` first "
                        "(files named train_shard_NNN.txt / test_shard_NNN.txt)")
    tok_json, ids = tokenizer.backend_tokenizer.to_str(), SpecialIds.of(tokenizer)
    settings = hashlib.sha256((json.dumps(dataclasses.asdict(config), sort_keys=True) + tok_json).encode())
    jobs = []
    for path in text_shards:
        name = os.path.basename(path)
        split = name.split("_", 1)[0]
        if split not in SPLIT_CODE:
            raise UserError(f"text shard {path} is not named train_shard_NNN.txt or test_shard_NNN.txt: rename it")
        if only is not None and name not in only:
            continue
        index = int("".join(c for c in name if c.isdigit()) or 0)
        key = settings.copy()
        key.update(f"{name}:{file_sha256(path)}".encode())
        jobs.append(ShardJob(path, os.path.join(output_dir, f"{split}_shard_{index:03d}.hdf5"), split, index,
                             tok_json, ids, config, key.hexdigest()[:32]))
    return jobs


def make_samples(text_shards: list[str], output_dir: str, tokenizer, config: SampleConfig,
                 num_workers: int | None = None, overwrite: bool = False, show_progress: bool = False,
                 only: set[str] | None = None, log=None) -> list[dict]:
    """Create ``{train,test}_shard_NNN.hdf5`` in ``output_dir`` from text shards named
    ``{train,test}_shard_NNN.txt`` (``only``: just these text shard names, for an array task);
    returns per-shard counts in shard order. Complete shards of the same settings are kept."""
    jobs = plan_jobs(text_shards, output_dir, tokenizer, config, only)
    os.makedirs(output_dir, exist_ok=True)
    if only is None:
        outputs = {j.out_path for j in jobs}
        for path in our_shard_files(output_dir):
            if path not in outputs:  # a shard of an earlier run with more shards
                if not overwrite:
                    raise UserError(f"{output_dir} holds {os.path.basename(path)}, which this run would not make: "
                                    "pass an empty --output_dir or add --overwrite")
                os.remove(path)
    done: dict[str, dict] = {}
    for job in jobs:  # all checks before any work
        if not os.path.exists(job.out_path):
            continue
        stats = shard_stats(job.out_path)
        if stats and stats["key"] == job.key:
            done[job.out_path] = stats
        elif not overwrite:
            raise UserError(f"{output_dir} already holds sample shards of other settings "
                            f"({os.path.basename(job.out_path)} ...): pass an empty --output_dir or add --overwrite")
    if done and log:
        log(f"{len(done)} of {len(jobs)} sample shards are complete from an earlier run: skipped")
    todo = [j for j in jobs if j.out_path not in done]
    for job in todo:  # a killed run's half-written shard (this run owns these names)
        remove_stale_temps(job.out_path)
    text_bytes = sum(os.path.getsize(j.text_path) for j in todo)
    # Worker processes pay ~1 s to start; below a few MB of text per worker the Rust
    # tokenizer's own threads in this process are faster.
    workers = max(1, min(num_workers or 1, len(todo), text_bytes // MIN_BYTES_PER_WORKER))
    results = dict(done)
    with progress(text_bytes, "samples", enabled=show_progress) as bar:
        for job, result in zip(todo, ordered_map(make_sample_shard, todo, workers)):
            results[job.out_path] = result
            bar.update(os.path.getsize(job.text_path))
    return [{k: v for k, v in results[j.out_path].items() if k != "key"} for j in jobs]
