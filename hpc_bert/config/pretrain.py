"""Pretraining configuration: nested dataclasses validated in ``__post_init__``.

Field names are the flag names of ABB / the seed command (``--lr``, ``--train_batch_size``,
``--total_training_time`` ...), so YAML keys, CLI flags and ABB scripts agree. Each section
checks its own values; ``PretrainConfig`` checks what spans sections.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass

from hpc_bert.config.flags import check_choices, field
from hpc_bert.errors import ConfigError

CURVES = ("linear", "exp", "cosine", "constant", "wsd")
DECAY_SHAPES = ("linear", "cosine", "sqrt")
LR_SCHEDULES = ("time", "step", "constant_step")
ATTENTION_SCOPES = ("auto", "document", "row")
REPORT_TO = ("tensorboard", "wandb", "none")


def _positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None or isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"--{name} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"--{name} must be {bound}, got {value}: pass e.g. --{name} 1")


def check_hours(name: str, value: float) -> None:
    """A budget in hours (--total_training_time, submit's --budget): positive and finite."""
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"--{name} must be a positive number of hours, got {value}: pass e.g. --{name} 24")


def check_batch_divisible(train_batch_size: int, micro_batch_size: int) -> None:
    """The global batch splits into whole micro batches (per rank: see pretrain/elastic.py)."""
    if train_batch_size % micro_batch_size:
        raise ConfigError(f"--train_batch_size {train_batch_size} is not a multiple of "
                          f"--train_micro_batch_size_per_gpu {micro_batch_size}: "
                          "make the global batch a multiple of the micro batch")


def _fraction(name: str, value: float, low_open: bool, high_open: bool, hint: str) -> None:
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ConfigError(f"--{name} must lie in {interval}, got {value}: {hint}")


@dataclass
class ModelConfig:
    model_type: str = field("bert-mlm", help="model family", choices=("bert-mlm",))
    tokenizer_name: str = field("bert-large-uncased", help="vocab.txt, tokenizer dir, or hub name")
    vocab_size: int | None = field(None, help="default: the tokenizer's size, padded to a multiple of 8")
    hidden_act: str = field("gelu", help="activation", choices=("gelu", "relu", "gelu_new", "silu"))
    hidden_size: int = field(1024)
    num_hidden_layers: int = field(24)
    num_attention_heads: int = field(16)
    intermediate_size: int = field(4096)
    hidden_dropout_prob: float = field(0.1)
    attention_probs_dropout_prob: float = field(0.1)
    max_position_embeddings: int = field(512)
    encoder_ln_mode: str = field("pre-ln", help="pre-ln or post-ln", choices=("pre-ln", "post-ln"))
    sparse_mask_prediction: bool = field(True, help="run the MLM head on masked positions only")
    attention_scope: str = field("auto", choices=ATTENTION_SCOPES,
                                 help="document: tokens attend within their own document of a packed row, "
                                      "positions restart per document; row: across the whole row; auto: "
                                      "document for --packing full_sentences shards, row otherwise")
    attention_kernel: str = field("sdpa", choices=("sdpa", "flex"),
                                  help="how the document mask is applied: SDPA with a boolean mask, or "
                                       "FlexAttention (CUDA only, no attention dropout)")

    def __post_init__(self):
        check_choices(self)
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            _positive(name, getattr(self, name))
        if self.vocab_size is not None:
            _positive("vocab_size", self.vocab_size)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"--hidden_size {self.hidden_size} is not divisible by "
                              f"--num_attention_heads {self.num_attention_heads}: pick a divisor")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            _fraction(name, getattr(self, name), False, True, "dropout is a probability below 1")
        if self.attention_kernel == "flex" and self.attention_scope == "row":
            raise ConfigError("--attention_kernel flex applies the document mask: use it with "
                              "--attention_scope document or auto, or drop it")

    def document_attention(self, packing: str | None) -> bool:
        """Whether to attend per document, given the shards' recorded --packing (None: unknown)."""
        if self.attention_scope == "auto":
            return packing == "full_sentences"
        return self.attention_scope == "document"


@dataclass
class DataConfig:
    dataset_path: str | None = field(None, help="folder of HDF5 shards (train*, test*)")
    data_loader_type: str = field("dist", help="ABB's loader name; only 'dist' exists", choices=("dist",))
    num_workers: int = field(1, help="background prefetch threads of the loader")
    dynamic_masking: bool = field(False, help="mask at load time instead of the shards' static masks")
    mlm_probability: float = field(0.15, help="masking rate for --dynamic_masking")

    def __post_init__(self):
        check_choices(self)
        _positive("num_workers", self.num_workers, allow_zero=True)
        _fraction("mlm_probability", self.mlm_probability, True, True, "e.g. 0.15 or 0.3")


@dataclass
class OptimConfig:
    optimizer_type: str = field("adamw", choices=("adamw", "adam", "lamb"))
    lr: float = field(1e-3, help="peak learning rate")
    weight_decay: float = field(0.01)
    adam_beta1: float = field(0.9)
    adam_beta2: float = field(0.98)
    adam_eps: float = field(1e-6)
    gradient_clipping: float = field(0.0, help="max grad norm; 0 disables clipping")
    train_batch_size: int = field(4096, help="global batch (micro x accumulation x world size)")
    train_micro_batch_size_per_gpu: int = field(32)

    def __post_init__(self):
        check_choices(self)
        _positive("lr", self.lr)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        _positive("adam_eps", self.adam_eps)
        _positive("gradient_clipping", self.gradient_clipping, allow_zero=True)
        for name in ("adam_beta1", "adam_beta2"):
            _fraction(name, getattr(self, name), False, True, "betas lie in [0, 1)")
        _positive("train_batch_size", self.train_batch_size)
        _positive("train_micro_batch_size_per_gpu", self.train_micro_batch_size_per_gpu)
        check_batch_divisible(self.train_batch_size, self.train_micro_batch_size_per_gpu)


@dataclass
class ScheduleConfig:
    total_training_time: float = field(24.0, help="training budget in hours")
    early_exit_time_marker: float | None = field(None, help="stop at this many hours; schedule keeps the full budget")
    lr_schedule: str = field("time", choices=LR_SCHEDULES)
    curve: str = field("linear", choices=CURVES, help="LR decay after warmup; wsd = warmup-stable-decay, whose "
                                                      "budget can change later (docs/budget-changes.md)")
    warmup_proportion: float = field(0.06, help="fraction of the budget spent warming up")
    decay_proportion: float = field(0.2, help="--curve wsd: the decay takes this last fraction of the budget")
    decay_shape: str = field("linear", choices=DECAY_SHAPES, help="--curve wsd: the decay's shape (sqrt: 1 - sqrt)")
    max_steps: int | None = field(None, help="step count for --lr_schedule step|constant_step")
    clock: str = field("wall", choices=("wall", "simulated"))
    simulated_step_seconds: float = field(1.0, help="elapsed seconds per optimizer step under --clock simulated")
    finetune_time_markers: tuple[float, ...] = field(default_factory=tuple,
                                                     help="fractions of the budget, e.g. 0.25,0.5,0.75")
    finetune_checkpoint_at_end: bool = field(False, help="save an HF model dir when training ends")

    def __post_init__(self):
        check_choices(self)
        check_hours("total_training_time", self.total_training_time)
        if self.early_exit_time_marker is not None and not self.early_exit_time_marker > 0:
            raise ConfigError(f"--early_exit_time_marker must be > 0 hours, got {self.early_exit_time_marker}: "
                              "leave it unset to train the whole budget")
        _fraction("warmup_proportion", self.warmup_proportion, False, True,
                  "it is a fraction of the budget, e.g. 0.06")
        if self.lr_schedule != "time":
            if self.max_steps is None:
                raise ConfigError(f"--lr_schedule {self.lr_schedule} needs --max_steps N "
                                  "(or use --lr_schedule time)")
            _positive("max_steps", self.max_steps)
        _positive("simulated_step_seconds", self.simulated_step_seconds)
        _fraction("decay_proportion", self.decay_proportion, True, True, "a fraction of the budget, e.g. 0.2")
        if self.curve == "wsd":
            if self.lr_schedule != "time":
                raise ConfigError(f"--curve wsd is a schedule in time: drop --lr_schedule {self.lr_schedule}")
            if self.warmup_proportion + self.decay_proportion > 1:
                raise ConfigError(f"--warmup_proportion {self.warmup_proportion} + --decay_proportion "
                                  f"{self.decay_proportion} exceed the budget: make them sum to at most 1")
        for m in self.finetune_time_markers:
            if not 0 < m <= 1:
                raise ConfigError(f"--finetune_time_markers has {m}, outside (0, 1]: markers are "
                                  "fractions of the budget, e.g. 0.25,0.5,0.75")
        if len(set(self.finetune_time_markers)) != len(self.finetune_time_markers):
            raise ConfigError("--finetune_time_markers lists a marker twice: list each fraction once")
        self.finetune_time_markers = tuple(sorted(self.finetune_time_markers))

    @property
    def budget_s(self) -> float:
        return self.total_training_time * 3600.0

    @property
    def early_exit_s(self) -> float | None:
        """--early_exit_time_marker in elapsed seconds, None when unset."""
        return None if self.early_exit_time_marker is None else self.early_exit_time_marker * 3600.0

    @property
    def stop_s(self) -> float:
        """Elapsed seconds at which training ends (early exit or the budget)."""
        return self.budget_s if self.early_exit_s is None else min(self.budget_s, self.early_exit_s)


@dataclass
class ValidationConfig:
    do_validation: bool = field(False)
    validation_epochs: int = field(3, help="validate every N epochs in the middle of training")
    validation_epochs_begin: int = field(1, help="... every N epochs during the first proportion")
    validation_epochs_end: int = field(1, help="... every N epochs during the last proportion")
    validation_begin_proportion: float = field(0.05)
    validation_end_proportion: float = field(0.01)
    validation_micro_batch: int = field(16)
    validation_max_samples: int = field(2048, help="size of the fixed held-out set")
    use_early_stopping: bool = field(False)
    early_stop_time: float = field(180.0, help="minutes of training after which early stopping may trigger")
    early_stop_eval_loss: float = field(6.0, help="stop if validation loss is above this after early_stop_time")

    def __post_init__(self):
        for name in ("validation_epochs", "validation_epochs_begin", "validation_epochs_end",
                     "validation_micro_batch", "validation_max_samples"):
            _positive(name, getattr(self, name))
        for name in ("validation_begin_proportion", "validation_end_proportion"):
            _fraction(name, getattr(self, name), False, False, "a fraction of the budget")
        _positive("early_stop_time", self.early_stop_time, allow_zero=True)


@dataclass
class CheckpointConfig:
    output_dir: str = field("runs/default", help="run dir: checkpoints, ledger, metrics")
    job_name: str = field("pretraining_experiment")
    project_name: str = field("budget-bert-pretraining")
    current_run_id: str = field("", help="ABB compatibility; the run dir is --output_dir")
    num_epochs_between_checkpoints: int = field(10000, help="save a training checkpoint every N epochs")
    checkpoint_every_minutes: float = field(30.0, help="save a training checkpoint every N minutes of training")
    keep_checkpoints: int = field(2, help="keep the last k training checkpoints")
    allow_budget_change: bool = field(False, help="resume a run whose curve is not wsd under another "
                                      "--total_training_time: the LR jumps to the new schedule's value at once "
                                      "(recorded in the ledger); --curve wsd runs change budget without it")
    async_checkpoints: bool = field(True, help="write periodic checkpoints in the background: a save blocks "
                                                "training only for the copy to host memory")

    def __post_init__(self):
        _positive("num_epochs_between_checkpoints", self.num_epochs_between_checkpoints)
        _positive("checkpoint_every_minutes", self.checkpoint_every_minutes)
        _positive("keep_checkpoints", self.keep_checkpoints)


@dataclass
class RuntimeConfig:
    seed: int = field(42)
    print_steps: int = field(100, help="log a train event every N optimizer steps")
    deepspeed: bool = field(True, help="ABB compatibility: DeepSpeed is always used")
    fp16: bool = field(False)
    fp16_backend: str = field("ds", choices=("ds", "apex"))
    fp16_opt: str = field("O2", help="ABB/apex opt level; DeepSpeed ignores it")
    bf16: bool = field(False)
    zero_stage: int = field(0, help="DeepSpeed ZeRO stage", choices=(0, 1, 2, 3))
    tensorboard: bool = field(True)
    progress_bar: bool = field(True)
    compile: str = field("auto", help="torch.compile the encoder and head + loss: auto = on with CUDA, off on CPU",
                         choices=("auto", "true", "false"))
    compile_cache_dir: str | None = field(None, help="Inductor's cache; default RUN_DIR/compile_cache")
    report_to: tuple[str, ...] = field(("tensorboard",), choices=REPORT_TO,
                                       help="where metrics go: tensorboard, wandb, both (tensorboard,wandb) "
                                            "or none (metrics.jsonl only)")
    wandb_entity: str | None = field(None, help="W&B team or user (--project_name, --job_name name the run)")
    peak_tflops: float | None = field(None, help="one device's peak TFLOP/s for MFU; default: a known GPU's bf16 "
                                                 "dense peak (none on CPU)")
    hang_timeout_s: float = field(0.0, help="end the allocation (stacks in RUN_DIR/hang_stacks, requeue status) "
                                            "when no optimizer step completes in this many seconds; 0 = auto: "
                                            "20x the slowest step, at least 600 s")

    def __post_init__(self):
        check_choices(self)
        _positive("print_steps", self.print_steps)
        if self.peak_tflops is not None:
            _positive("peak_tflops", self.peak_tflops)
        _positive("hang_timeout_s", self.hang_timeout_s, allow_zero=True)
        if self.fp16 and self.bf16:
            raise ConfigError("--fp16 and --bf16 are both set: choose one precision")
        self.report_to = tuple(dict.fromkeys(x for x in self.report_to if x != "none"))
        if "wandb" in self.report_to and importlib.util.find_spec("wandb") is None:
            raise ConfigError("--report_to wandb needs the wandb package: pip install 'hpc_bert[wandb]' "
                              "(or pip install wandb), or drop wandb from --report_to")


@dataclass
class PretrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def notes(self) -> list[str]:
        """Allowed but surprising settings, reported once at startup."""
        out = []
        s = self.schedule
        if s.early_exit_time_marker is not None and s.early_exit_time_marker > s.total_training_time:
            out.append(f"--early_exit_time_marker {s.early_exit_time_marker} h is beyond --total_training_time "
                       f"{s.total_training_time} h: training stops at the budget's end")
        if self.runtime.fp16_backend == "apex":
            out.append("--fp16_backend apex: apex is not used; DeepSpeed's loss scaling handles fp16")
        late = [m for m in s.finetune_time_markers if m * s.budget_s > s.stop_s]
        if late:
            out.append(f"--finetune_time_markers {late} fall after --early_exit_time_marker and will not fire")
        return out
