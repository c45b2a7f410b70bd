"""Corpus inputs: which files ``--input`` names, their format, and their documents as a stream.

Formats (detected per file, after an optional .gz / .bz2 / .xz / .zst suffix):
  text        one document per line (the default for any other name)
  wikiextractor  ``<doc id=.. title=..>`` ... ``</doc>`` blocks (detected from the first line);
              its ``--json`` output is JSON lines with a "text" field
  .jsonl / .json  JSON lines; the document is the ``--text_field`` (default "text")
  .parquet / .arrow  what ``datasets`` exports (``to_parquet``) or ``save_to_disk`` writes
A folder is read recursively, files in path order (hidden files and ``datasets``' json
metadata skipped). ``--dataset_name`` streams a ``datasets`` dataset instead.
``check_inputs`` opens every file and reads its first record before any work, so an
unreadable file is one line naming it. Every reader streams: memory does not grow with a
file's size (Parquet/Arrow are read one record batch at a time).
"""
from __future__ import annotations

import bz2
import gzip
import io
import itertools
import json
import lzma
import os
import re
from typing import IO, Iterator

from hpc_bert.errors import UserError
from hpc_bert.hub import unreachable_reason

COMPRESSION = (".gz", ".bz2", ".xz", ".zst")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
TABLE_SUFFIXES = (".parquet", ".arrow")
# files that save_to_disk writes next to the data
_SKIP_NAMES = {"dataset_info.json", "state.json", "dataset_dict.json"}
_DOC_OPEN = re.compile(r"^<doc\b[^>]*>\s*$")
_TABLE_BATCH_ROWS = 1024


def input_files(path: str) -> list[str]:
    """The corpus files behind ``--input``: the file itself, or a folder's files, recursively."""
    if not os.path.exists(path):
        raise UserError(f"input {path} does not exist: pass a text file with one document per line, "
                        "a folder of corpus files, or --dataset_name (e.g. from `python -m hpc_bert.data fetch`)")
    if os.path.isfile(path):
        return [path]
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(root, n) for n in names if not n.startswith(".") and n not in _SKIP_NAMES]
    if not files:
        raise UserError(f"input folder {path} holds no files: put corpus files (one document per line, "
                        "JSON lines, Parquet ...) in it")
    return sorted(files)


def _stem(path: str) -> str:
    name = os.path.basename(path).lower()
    for suffix in COMPRESSION:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def open_text(path: str) -> IO[str]:
    """A text stream of ``path``, decompressed by its suffix."""
    name = path.lower()
    if name.endswith(".gz"):
        raw: IO[bytes] = gzip.open(path, "rb")
    elif name.endswith(".bz2"):
        raw = bz2.open(path, "rb")
    elif name.endswith(".xz"):
        raw = lzma.open(path, "rb")
    elif name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise UserError(f"{path} is zstd-compressed and the zstandard package is missing: "
                            "pip install zstandard (or decompress the file)") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    else:
        raw = open(path, "rb")
    return io.TextIOWrapper(io.BufferedReader(raw) if not hasattr(raw, "peek") else raw,
                            encoding="utf-8", errors="replace")


def file_format(path: str) -> str:
    """'text', 'wikiextractor', 'json', 'parquet' or 'arrow' (reads at most one line)."""
    stem = _stem(path)
    if stem.endswith(".parquet"):
        return "parquet"
    if stem.endswith(".arrow"):
        return "arrow"
    if stem.endswith(JSON_SUFFIXES):
        return "json"
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                return "wikiextractor" if _DOC_OPEN.match(line.strip()) else "text"
    return "text"


def _text_docs(fh: IO[str]) -> Iterator[str]:
    for line in fh:
        line = line.strip()
        if line:
            yield line


def _wikiextractor_docs(fh: IO[str]) -> Iterator[str]:
    """Text between <doc ...> and </doc>; the first line (the title) is dropped, as
    wikiextractor repeats it there."""
    lines: list[str] | None = None
    for line in fh:
        stripped = line.strip()
        if lines is None:
            if _DOC_OPEN.match(stripped):
                lines = []
        elif stripped == "</doc>":
            text = " ".join(" ".join(lines[1:]).split())
            if text:
                yield text
            lines = None
        elif stripped:
            lines.append(stripped)


def _field_text(record, text_field: str, path: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise UserError(f"{path} {where} has no field {text_field!r} (it has: {keys[:200]}): "
                        "pass --text_field NAME naming the field that holds the text")
    value = record[text_field]
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _json_docs(fh: IO[str], path: str, text_field: str) -> Iterator[str]:
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path} line {number} is not JSON ({e}): pass JSON lines, one object per line") from None
        text = " ".join(_field_text(record, text_field, path, f"line {number}").split())
        if text:
            yield text


def _table_batches(path: str, fmt: str):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path} is {fmt} and pyarrow is missing: pip install pyarrow") from None
    try:
        if fmt == "parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=_TABLE_BATCH_ROWS)
            return
        with pa.memory_map(path) as source:
            try:  # save_to_disk writes the IPC stream format; to_arrow-style files are the file format
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                file_reader = pa.ipc.open_file(source)
                reader = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            yield from reader
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"cannot read {path} as {fmt} ({str(e).splitlines()[0][:160]}): "
                        "pass a file written by pyarrow / datasets") from None


def _table_docs(path: str, fmt: str, text_field: str) -> Iterator[str]:
    for batch in _table_batches(path, fmt):
        if text_field not in batch.schema.names:
            raise UserError(f"{path} has no column {text_field!r} (it has: {', '.join(batch.schema.names)[:200]}): "
                            "pass --text_field NAME naming the column that holds the text")
        for value in batch.column(batch.schema.names.index(text_field)).to_pylist():
            text = " ".join(str(value).split()) if value is not None else ""
            if text:
                yield text


def file_documents(path: str, text_field: str = "text") -> Iterator[str]:
    """The documents of one corpus file, in file order, whitespace-normalised, none empty."""
    fmt = file_format(path)
    if fmt in ("parquet", "arrow"):
        yield from _table_docs(path, fmt, text_field)
        return
    with open_text(path) as fh:
        if fmt == "json":
            yield from _json_docs(fh, path, text_field)
        elif fmt == "wikiextractor":
            yield from _wikiextractor_docs(fh)
        else:
            yield from _text_docs(fh)


def check_inputs(files: list[str], text_field: str = "text") -> int:
    """Open every file and read its first document: a bad file fails here, before any work.
    Returns how many files hold text."""
    with_text = 0
    for path in files:
        try:
            with_text += next(file_documents(path, text_field), None) is not None
        except UserError:
            raise
        except (OSError, EOFError, lzma.LZMAError, UnicodeError, ValueError) as e:
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"cannot read input file {path} ({why}): check the file (a damaged or "
                            "mis-named compressed file?) or leave it out of --input") from None
    return with_text


def dataset_documents(name: str, config: str | None, text_field: str = "text",
                      split: str = "train") -> Iterator[str]:
    """Documents of a ``datasets`` dataset, streamed (hub name or a local dataset folder)."""
    try:
        import datasets
    except ImportError:
        raise UserError("--dataset_name needs the datasets package: pip install datasets") from None
    why = None if os.path.isdir(name) else unreachable_reason()
    if why:
        raise UserError(f"cannot stream dataset {name!r}{f' ({config})' if config else ''} ({why}): set --input "
                        "to a local copy, or run where the hub is reachable")
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        if text_field not in (ds.column_names or [text_field]):
            raise UserError(f"dataset {name!r} has no column {text_field!r} (it has: {', '.join(ds.column_names)}): "
                            "pass --text_field NAME")
        rows = iter(ds)
        first = next(rows, None)
    except UserError:
        raise
    except Exception as e:  # datasets raises many kinds (ConnectionError, DatasetNotFoundError, ...)
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise UserError(f"cannot stream dataset {name!r}{f' ({config})' if config else ''} ({why}): check the "
                        "name and the network (offline, set --input to a local copy)") from None
    if first is None:
        return
    for number, record in enumerate(itertools.chain([first], rows)):
        text = " ".join(_field_text(record, text_field, f"dataset {name}", f"row {number}").split())
        if text:
            yield text


def documents(files: list[str], text_field: str = "text") -> Iterator[str]:
    for path in files:
        yield from file_documents(path, text_field)


def input_bytes(files: list[str]) -> int:
    """Size on disk of the inputs (compressed size for compressed files): the progress total."""
    return sum(os.path.getsize(f) for f in files)
