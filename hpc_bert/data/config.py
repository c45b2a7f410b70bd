"""Settings of data preparation, each field defined once: the dataclasses here are the flags of
``python -m hpc_bert.data COMMAND`` (through hpc_bert.config.flags), the arguments of the
pipeline functions and what prepare.json records.

Sections (flag names are the leaf field names, unique across sections):
  InputConfig    where the text comes from (--input / --dataset_name, --text_field)
  SplitConfig    document-level train/test split into text shards
  SampleConfig   tokenize, pack, mask (seed here also seeds the split)
  TokenizerConfig  --tokenizer_name or --train_tokenizer
  ClusterConfig  (section "jobs") --cluster local|slurm, --partition, --array_parallelism
"""
from __future__ import annotations

import dataclasses
import os

from hpc_bert.config.flags import check_choices, field
from hpc_bert.errors import ConfigError

PACKINGS = ("full_sentences", "doc_sentences")
CLUSTERS = ("none", "local", "slurm")


def require(name: str, value, example: str) -> None:
    if value in (None, ""):
        raise ConfigError(f"--{name} is required: pass e.g. --{name} {example}")


def default_workers() -> int:
    """The cores this process may use (a SLURM job's allocation, a taskset), not the node's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class InputConfig:
    input: str | None = field(None, help="corpus file or folder (recursive): text with one document per line, "
                                         ".gz/.bz2/.xz/.zst, wikiextractor output, JSON lines, Parquet/Arrow")
    dataset_name: str | None = field(None, help="a `datasets` dataset streamed instead of --input "
                                                "(hub name, or a local dataset folder)")
    dataset_config: str | None = field(None, help="the dataset's configuration name (e.g. 20231101.en)")
    text_field: str = field("text", help="field / column holding the text in JSON lines, Parquet, Arrow, datasets")

    def __post_init__(self):
        if self.input and self.dataset_name:
            raise ConfigError("--input and --dataset_name are both given: choose one source of text")
        if self.dataset_config and not self.dataset_name:
            raise ConfigError("--dataset_config needs --dataset_name: pass the dataset it configures")
        if not self.text_field:
            raise ConfigError("--text_field is empty: pass the name of the field holding the text, e.g. text")

    @property
    def given(self) -> bool:
        return bool(self.input or self.dataset_name)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    num_train_shards: int = field(8)
    num_test_shards: int = field(1)
    frac_test: float = field(0.05, help="fraction of documents held out for the test shards")

    def __post_init__(self):
        if self.num_train_shards < 1:
            raise ConfigError(f"--num_train_shards must be >= 1, got {self.num_train_shards}")
        if self.num_test_shards < 0:
            raise ConfigError(f"--num_test_shards must be >= 0, got {self.num_test_shards}")
        if not 0 <= self.frac_test < 1:
            raise ConfigError(f"--frac_test must lie in [0, 1), got {self.frac_test}: e.g. --frac_test 0.05")
        if (self.num_test_shards == 0) != (self.frac_test == 0):
            raise ConfigError(f"--num_test_shards {self.num_test_shards} and --frac_test {self.frac_test} "
                              "disagree: hold out text with both > 0 (e.g. 1 and 0.05) or with neither")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    max_seq_length: int = field(128)
    dup_factor: int = field(5, help="passes over the train text, each with fresh static masks")
    masked_lm_prob: float = field(0.15)
    max_predictions_per_seq: int = field(20)
    short_seq_prob: float = field(0.1, help="doc_sentences only: probability of a shorter target length")
    packing: str = field("full_sentences", choices=PACKINGS,
                         help="full_sentences: rows filled across documents ([SEP] between them), <1%% "
                              "padding; doc_sentences: BERT's per-document packing")
    seed: int = field(42, help="seeds the split, the packing and the masks")

    def __post_init__(self):
        if not 8 <= self.max_seq_length <= 65535:
            raise ConfigError(f"--max_seq_length must lie in [8, 65535], got {self.max_seq_length}: e.g. 128")
        if self.dup_factor < 1:
            raise ConfigError(f"--dup_factor must be >= 1, got {self.dup_factor}: e.g. --dup_factor 5")
        if not 0 < self.masked_lm_prob < 1:
            raise ConfigError(f"--masked_lm_prob must lie in (0, 1), got {self.masked_lm_prob}: e.g. 0.15")
        if not 1 <= self.max_predictions_per_seq <= self.max_seq_length - 2:
            raise ConfigError(f"--max_predictions_per_seq must lie in [1, max_seq_length - 2], got "
                              f"{self.max_predictions_per_seq}: e.g. 20 for --max_seq_length 128")
        if not 0 <= self.short_seq_prob <= 1:
            raise ConfigError(f"--short_seq_prob must lie in [0, 1], got {self.short_seq_prob}: e.g. 0.1")
        check_choices(self)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    tokenizer_name: str | None = field(None, help="vocab.txt, tokenizer dir, or hub name")
    train_tokenizer: bool = field(False, help="train a WordPiece vocab on the train text instead")
    vocab_size: int = field(30522, help="size of a trained vocab")
    lowercase: bool = field(True, help="lowercase for a trained vocab")

    def __post_init__(self):
        if self.tokenizer_name and self.train_tokenizer:
            raise ConfigError("--tokenizer_name and --train_tokenizer are both given: choose one")
        if not self.tokenizer_name and not self.train_tokenizer:
            raise ConfigError("pass --tokenizer_name VOCAB_TXT_OR_DIR or --train_tokenizer (BERT's vocab: "
                              "`python -m hpc_bert.data fetch --sources vocab --output_dir DIR`)")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    cluster: str = field("none", choices=CLUSTERS,
                         help="none: run here, now; local / slurm: as jobs (a split job, then an array "
                              "of sample jobs afterok on it) through submitit")
    partition: str | None = field(None, help="SLURM partition of the data jobs")
    array_parallelism: int = field(16, help="most sample tasks of the array running at once")
    shards_per_task: int = field(1, help="sample shards made by one array task")
    cpus_per_task: int = field(4, help="cores of each data job (the workers of its task)")
    time_min: int = field(240, help="time limit of each data job, in minutes")

    def __post_init__(self):
        check_choices(self)
        for name in ("array_parallelism", "shards_per_task", "cpus_per_task", "time_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    output_dir: str | None = field(None, help="dataset folder (the trainer's --dataset_path)")
    num_workers: int = field(0, help="processes; 0 = the cores this process may use")
    overwrite: bool = field(False, help="replace outputs made with other settings (same settings: resumed)")
    progress_bar: bool = field(True, help="show MB/s and ETA on stderr")
    inputs: InputConfig = field(default_factory=InputConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(train_tokenizer=True))
    jobs: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self):
        require("output_dir", self.output_dir, "data/wiki128")
        if self.num_workers < 0:
            raise ConfigError(f"--num_workers must be >= 0, got {self.num_workers}: 0 uses every core")

    @property
    def workers(self) -> int:
        return self.num_workers or default_workers()
