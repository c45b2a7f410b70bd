"""Corpus -> text shards, streamed: document-level train/test split, documents spread over shards.

Documents, not sentences, are split between train and test so that no held-out text leaks
into training. Where a document goes is a pure function of (its position in the corpus, the
seed) — two Weyl sequences, so the test fraction and the shard sizes in documents are exact
to within a few documents — whatever the number of workers, and without holding the corpus:
the input is read once, in blocks that worker processes split into sentences, and each
block's text is appended to its shards in input order.

Text shard format (BERT's): one sentence per line, a blank line between documents. The
shards of one run appear together (each is written to a hidden temp file, renamed at the
end) and ``shards.json``, written last, marks them complete: a re-run with the same inputs
and settings reuses them, a killed run leaves no visible partial shard.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
from typing import Iterator

from hpc_bert.atomic import atomic_output, remove_stale_temps, write_json_atomic
from hpc_bert.data import sources
from hpc_bert.data.config import InputConfig, SplitConfig
from hpc_bert.data.corpus import split_sentences
from hpc_bert.data.parallel import ordered_map
from hpc_bert.data.progress import progress
from hpc_bert.errors import UserError

MANIFEST = "shards.json"
_TEXT_SHARD = re.compile(r"^(train|test)_shard_\d+\.txt$")
_BLOCK_CHARS = 1 << 20  # text per worker task: big enough to amortise the pickling
_ALPHA_SPLIT = math.sqrt(2) - 1  # irrational steps: equidistributed, jointly too
_ALPHA_SHARD = math.sqrt(3) - 1


def _offset(seed: int, salt: int) -> float:
    return ((seed * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) % (1 << 64)) / float(1 << 64)


def assign(position: int, seed: int, split: SplitConfig) -> tuple[str, int]:
    """(split name, shard index) of the document at ``position`` (0-based) of the corpus."""
    u = (_offset(seed, 1) + position * _ALPHA_SPLIT) % 1.0
    v = (_offset(seed, 2) + position * _ALPHA_SHARD) % 1.0
    if u < split.frac_test:
        return "test", min(int(v * split.num_test_shards), split.num_test_shards - 1)
    return "train", min(int(v * split.num_train_shards), split.num_train_shards - 1)


def shard_name(split: str, index: int) -> str:
    return f"{split}_shard_{index:03d}.txt"


@dataclasses.dataclass(frozen=True)
class _Block:
    start: int  # corpus position of docs[0]
    docs: list[str]
    seed: int
    split: SplitConfig


def _split_block(block: _Block) -> tuple[dict[str, tuple[str, int, int]], int]:
    """(shard name -> (its text from this block, documents, characters), input bytes read)."""
    out: dict[str, list] = {}
    read = 0
    for offset, doc in enumerate(block.docs):
        read += len(doc.encode("utf-8", "replace")) + 1  # + its newline: what the progress bar counts
        sentences = split_sentences(doc)
        if not sentences:
            continue
        entry = out.setdefault(shard_name(*assign(block.start + offset, block.seed, block.split)), [[], 0, 0])
        entry[0].append("\n".join(sentences) + "\n\n")
        entry[1] += 1
        entry[2] += len(doc)
    return {name: ("".join(parts), docs, chars) for name, (parts, docs, chars) in out.items()}, read


def _blocks(docs: Iterator[str], seed: int, split: SplitConfig) -> Iterator[_Block]:
    block, chars, start = [], 0, 0
    for position, doc in enumerate(docs):
        block.append(doc)
        chars += len(doc)
        if chars >= _BLOCK_CHARS:
            yield _Block(start, block, seed, split)
            block, chars, start = [], 0, position + 1
    if block:
        yield _Block(start, block, seed, split)


def source_key(inputs: InputConfig) -> dict:
    """What the shards were made from: a changed input file means a new split."""
    if inputs.dataset_name:
        return {"dataset_name": inputs.dataset_name, "dataset_config": inputs.dataset_config,
                "text_field": inputs.text_field}
    files = sources.input_files(inputs.input)
    return {"files": [[os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files],
            "text_field": inputs.text_field}


def open_inputs(inputs: InputConfig) -> tuple[Iterator[str], int | None]:
    """(document stream, total bytes for the progress bar); every input file checked first."""
    if not inputs.given:
        raise UserError("no text given: pass --input FILE_OR_FOLDER or --dataset_name NAME")
    if inputs.dataset_name:
        return sources.dataset_documents(inputs.dataset_name, inputs.dataset_config, inputs.text_field), None
    files = sources.input_files(inputs.input)
    if not sources.check_inputs(files, inputs.text_field):
        raise UserError(f"input {inputs.input} holds no text: put documents in it (one per line for text files)")
    compressed = any(f.lower().endswith(sources.COMPRESSION) for f in files)
    return sources.documents(files, inputs.text_field), None if compressed else sources.input_bytes(files)


def text_shard_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if _TEXT_SHARD.match(n))


def read_manifest(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, MANIFEST)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def make_text_shards(inputs: InputConfig, output_dir: str, split: SplitConfig, seed: int = 42,
                     workers: int = 1, overwrite: bool = False, show_progress: bool = False) -> dict:
    """Write ``{train,test}_shard_NNN.txt`` and ``shards.json`` into ``output_dir``; returns the
    manifest (reused as is when a complete split of the same inputs and settings is there)."""
    key = {"source": source_key(inputs), "split": dataclasses.asdict(split), "seed": seed}
    old = read_manifest(output_dir)
    if old and old.get("key") == key and all(os.path.isfile(os.path.join(output_dir, s["file"]))
                                             for s in old["shards"]):
        return {**old, "reused": True}
    stale = text_shard_files(output_dir)
    if stale and old and not overwrite:
        raise UserError(f"{output_dir} already holds text shards of other inputs or settings "
                        f"({os.path.basename(stale[0])} ...): pass an empty --output_dir or add --overwrite")
    docs, total = open_inputs(inputs)
    os.makedirs(output_dir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(output_dir, MANIFEST))  # from here on the old shards are not complete
    names = [shard_name("train", i) for i in range(split.num_train_shards)] + \
            [shard_name("test", i) for i in range(split.num_test_shards)]
    counts = {n: [0, 0] for n in names}
    for name in names:  # a killed split's half-written shards
        remove_stale_temps(os.path.join(output_dir, name))
    with contextlib.ExitStack() as stack:
        handles = {n: stack.enter_context(open(stack.enter_context(atomic_output(os.path.join(output_dir, n))),
                                               "w", encoding="utf-8")) for n in names}
        bar = stack.enter_context(progress(total, "split", enabled=show_progress))
        for result, read in ordered_map(_split_block, _blocks(docs, seed, split), workers):
            for name, (text, n_docs, n_chars) in result.items():
                handles[name].write(text)
                counts[name][0] += n_docs
                counts[name][1] += n_chars
            bar.update(read)
        empty = [n for n in names if counts[n][0] == 0]
        if empty:
            total_docs = sum(c[0] for c in counts.values())
            what = inputs.input or inputs.dataset_name
            if not total_docs:
                raise UserError(f"input {what} holds no text: put documents in it (one per line for text files)")
            raise UserError(f"the corpus {what} has {total_docs} documents, too few to fill {split.num_train_shards} "
                            f"train and {split.num_test_shards} test shards ({empty[0]} would be empty): use fewer "
                            "shards or more text")
    for path in stale:
        if os.path.basename(path) not in counts:  # a shard of an earlier split with more shards
            os.remove(path)
    manifest = {"key": key, "num_documents": sum(c[0] for c in counts.values()),
                "shards": [{"file": n, "split": n.split("_", 1)[0], "documents": counts[n][0],
                            "chars": counts[n][1]} for n in names]}
    write_json_atomic(os.path.join(output_dir, MANIFEST), manifest)
    return manifest


def iter_text_shard(path: str, max_chars: int = 1 << 22) -> Iterator[list[list[str]]]:
    """Documents of a text shard (each a list of sentences), in chunks of about ``max_chars``."""
    docs, current, chars = [], [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line:
                current.append(line)
                chars += len(line)
            elif current:
                docs.append(current)
                current = []
                if chars >= max_chars:
                    yield docs
                    docs, chars = [], 0
    if current:
        docs.append(current)
    if docs:
        yield docs


def read_text_shard(path: str) -> list[list[str]]:
    """All documents of a text shard, each a list of sentences."""
    return [doc for chunk in iter_text_shard(path) for doc in chunk]
