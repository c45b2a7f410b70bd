"""Sample generation throughput: our pipeline vs a naive single-process loop.

Both start from the same text shards (one sentence per line, documents separated by blank
lines) and produce the same kind of output: dup_factor passes of packed ``[CLS] A [SEP]``
sequences with BERT's static 80/10/10 masks, written to HDF5. The naive loop is what the
original BERT/ABB scripts do: the pure-Python WordPiece tokenizer (transformers'
BertTokenizerLegacy, i.e. the slow ``BertTokenizer``), and Python loops for packing and
masking, in one process. Ours: the Rust tokenizer, vectorised masking, one process per core.

    python bench/data_prep.py                       # Wikipedia excerpt + BERT vocab (fetched, cached)
    python bench/data_prep.py --input corpus.txt --tokenizer_name vocab.txt

Prints both throughputs (tokens/s) and their ratio, measured in the same run (goal >= 5x).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpc_bert.data.samples import SampleConfig, make_samples  # noqa: E402
from hpc_bert.data.shards import make_text_shards, read_text_shard, text_shard_files  # noqa: E402
from hpc_bert.data.tokenizer import load_tokenizer  # noqa: E402


def naive_samples(shards: list[str], tok, cfg: SampleConfig, out_dir: str) -> tuple[int, int]:
    """BERT's create_pretraining_data, single segment, in plain Python. Returns (samples, tokens)."""
    vocab_ids = list(range(len(tok.vocab)))
    cls_id, sep_id, mask_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    max_tokens = cfg.max_seq_length - 2
    total_samples = total_tokens = 0
    for shard_index, path in enumerate(shards):
        rng = random.Random(cfg.seed + shard_index)
        docs = [[tok.convert_tokens_to_ids(tok.tokenize(s)) for s in doc] for doc in read_text_shard(path)]
        total_tokens += sum(len(s) for d in docs for s in d)
        passes = cfg.dup_factor if os.path.basename(path).startswith("train") else 1
        rows = []
        for _ in range(passes):
            for doc in docs:
                target = max_tokens if rng.random() >= cfg.short_seq_prob else rng.randint(2, max_tokens)
                chunk: list[int] = []
                for i, sentence in enumerate(doc):
                    chunk.extend(sentence)
                    if i == len(doc) - 1 or len(chunk) >= target:
                        rows.append([cls_id, *chunk[:max_tokens], sep_id])  # BERT truncates the rest
                        chunk = []
                        target = max_tokens if rng.random() >= cfg.short_seq_prob else rng.randint(2, max_tokens)
        rng.shuffle(rows)
        n = len(rows)
        ids = np.zeros((n, cfg.max_seq_length), np.int32)
        mask = np.zeros((n, cfg.max_seq_length), np.int8)
        positions = np.zeros((n, cfg.max_predictions_per_seq), np.int32)
        labels = np.zeros((n, cfg.max_predictions_per_seq), np.int32)
        for r, tokens in enumerate(rows):
            candidates = list(range(1, len(tokens) - 1))
            rng.shuffle(candidates)
            k = min(cfg.max_predictions_per_seq, max(1, int(round(len(tokens) * cfg.masked_lm_prob))))
            chosen = sorted(candidates[:k])
            out = list(tokens)
            for j, p in enumerate(chosen):
                draw = rng.random()
                out[p] = mask_id if draw < 0.8 else tokens[p] if draw < 0.9 else rng.choice(vocab_ids)
                positions[r, j], labels[r, j] = p, tokens[p]
            ids[r, :len(out)] = out
            mask[r, :len(out)] = 1
        with h5py.File(os.path.join(out_dir, f"naive_{shard_index:03d}.hdf5"), "w") as f:
            for key, value in (("input_ids", ids), ("input_mask", mask), ("segment_ids", np.zeros_like(mask)),
                               ("masked_lm_positions", positions), ("masked_lm_ids", labels)):
                f.create_dataset(key, data=value)
        total_samples += n
    return total_samples, total_tokens


def default_inputs(workdir: str) -> tuple[str, str]:
    from hpc_bert.data import fetch

    written = fetch.fetch(workdir, ("wiki", "vocab"))
    return written["wiki"], written["vocab"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", help="corpus (one document per line); default: the Wikipedia excerpt")
    parser.add_argument("--tokenizer_name", help="vocab.txt; default: BERT's uncased vocab")
    parser.add_argument("--num_train_shards", type=int, default=8)
    parser.add_argument("--dup_factor", type=int, default=5)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--num_workers", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus, vocab = (args.input, args.tokenizer_name) if args.input and args.tokenizer_name \
            else default_inputs(work)
        make_text_shards(corpus, os.path.join(work, "text"), args.num_train_shards, 1, 0.05, seed=42)
        shards = text_shard_files(os.path.join(work, "text"))
        cfg = SampleConfig(max_seq_length=args.max_seq_length, dup_factor=args.dup_factor)
        mb = sum(os.path.getsize(p) for p in shards) / 1e6

        # tokenizers are built before the clocks start: only sample generation is timed
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        tokenizer, slow_tokenizer = load_tokenizer(vocab), BertTokenizerLegacy(vocab_file=vocab)
        start = time.perf_counter()
        results = make_samples(shards, os.path.join(work, "ours"), tokenizer, cfg, args.num_workers or None)
        ours_s = time.perf_counter() - start
        ours_samples, tokens = sum(r["samples"] for r in results), sum(r["tokens"] for r in results)

        os.makedirs(os.path.join(work, "naive"))
        start = time.perf_counter()
        naive_n, naive_tokens = naive_samples(shards, slow_tokenizer, cfg, os.path.join(work, "naive"))
        naive_s = time.perf_counter() - start

    print(f"corpus: {mb:.1f} MB of text in {len(shards)} shards, {tokens} tokens, dup_factor {cfg.dup_factor}, "
          f"{os.cpu_count()} cores")
    print(f"ours : {ours_samples:8d} samples in {ours_s:6.2f} s = {tokens / ours_s:10.0f} corpus tokens/s")
    print(f"naive: {naive_n:8d} samples in {naive_s:6.2f} s = {naive_tokens / naive_s:10.0f} corpus tokens/s")
    print(f"ratio: {naive_s / ours_s:.1f}x faster (goal >= 5x)")


if __name__ == "__main__":
    main()
