"""Corpus -> text shards: document-level train/test split, shards balanced by size.

Documents, not sentences, are split between train and test so that no held-out text leaks
into training. Each split is spread over its shards by "largest document first, to the
lightest shard", which keeps shard sizes within one document of each other; the result
depends only on the corpus and the seed.

Text shard format (BERT's): one sentence per line, a blank line between documents.
"""
from __future__ import annotations

import heapq
import json
import os
import re

import numpy as np

from hpc_bert.data.corpus import atomic_write_text, read_documents, split_sentences
from hpc_bert.errors import UserError

_TEXT_SHARD = re.compile(r"^(train|test)_shard_\d+\.txt$")


def split_documents(num_docs: int, frac_test: float, num_test_shards: int, num_train_shards: int,
                    seed: int) -> tuple[list[int], list[int]]:
    """(train doc indices, test doc indices); each list in a seeded random order."""
    if num_train_shards < 1:
        raise UserError(f"--num_train_shards must be >= 1, got {num_train_shards}")
    if num_test_shards < 0:
        raise UserError(f"--num_test_shards must be >= 0, got {num_test_shards}")
    if not 0 <= frac_test < 1:
        raise UserError(f"--frac_test must lie in [0, 1), got {frac_test}: e.g. --frac_test 0.05")
    if (num_test_shards == 0) != (frac_test == 0):
        raise UserError(f"--num_test_shards {num_test_shards} and --frac_test {frac_test} disagree: "
                        "hold out text with both > 0 (e.g. 1 and 0.05) or with neither")
    order = np.random.default_rng(seed).permutation(num_docs).tolist()
    num_test = max(num_test_shards, int(round(frac_test * num_docs))) if num_test_shards else 0
    if num_docs - num_test < num_train_shards:
        raise UserError(f"the corpus has {num_docs} documents, too few for {num_train_shards} train and "
                        f"{num_test_shards} test shards (one document per line): use fewer shards or more text")
    return order[num_test:], order[:num_test]


def balance(doc_ids: list[int], sizes: list[int], num_shards: int) -> list[list[int]]:
    """Assign documents to shards, largest first to the lightest shard; keeps the input
    order within each shard."""
    rank = {d: i for i, d in enumerate(doc_ids)}
    heap = [(0, s) for s in range(num_shards)]  # (chars so far, shard); ties -> lower shard
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    for d in sorted(doc_ids, key=lambda d: (-sizes[d], rank[d])):
        total, s = heapq.heappop(heap)
        shards[s].append(d)
        heapq.heappush(heap, (total + sizes[d], s))
    return [sorted(s, key=rank.__getitem__) for s in shards]


def _shard_text(docs: list[str]) -> str:
    blocks = []
    for doc in docs:
        sentences = split_sentences(doc)
        if sentences:
            blocks.append("\n".join(sentences) + "\n")
    return "\n".join(blocks)


def text_shard_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if _TEXT_SHARD.match(n))


def make_text_shards(input_path: str, output_dir: str, num_train_shards: int = 8, num_test_shards: int = 1,
                     frac_test: float = 0.05, seed: int = 42, overwrite: bool = False) -> dict:
    """Write ``{train,test}_shard_NNN.txt`` into ``output_dir``; returns the manifest."""
    docs = list(read_documents(input_path))
    if not docs:
        raise UserError(f"input {input_path} holds no text: put one document per line")
    train_ids, test_ids = split_documents(len(docs), frac_test, num_test_shards, num_train_shards, seed)
    os.makedirs(output_dir, exist_ok=True)
    stale = text_shard_files(output_dir)
    if stale and not overwrite:
        raise UserError(f"{output_dir} already holds text shards ({os.path.basename(stale[0])} ...): "
                        "pass an empty --output_dir or add --overwrite")
    for path in stale:
        os.remove(path)
    sizes = [len(d) for d in docs]
    manifest = {"input": os.path.abspath(input_path), "seed": seed, "frac_test": frac_test,
                "num_documents": len(docs), "shards": []}
    for split, ids, count in (("train", train_ids, num_train_shards), ("test", test_ids, num_test_shards)):
        for index, shard in enumerate(balance(ids, sizes, count)):
            name = f"{split}_shard_{index:03d}.txt"
            atomic_write_text(os.path.join(output_dir, name), _shard_text([docs[d] for d in shard]))
            manifest["shards"].append({"file": name, "split": split, "documents": len(shard),
                                       "chars": sum(sizes[d] for d in shard)})
    atomic_write_text(os.path.join(output_dir, "shards.json"), json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_text_shard(path: str) -> list[list[str]]:
    """Documents of a text shard, each a list of sentences."""
    docs, current = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                docs.append(current)
                current = []
    if current:
        docs.append(current)
    return docs
