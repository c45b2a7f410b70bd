"""Fine-tune one checkpoint on one GLUE task with transformers' Trainer; write results.json.

    python -m hpc_bert.finetune --model_name_or_path RUN/finetune_checkpoints/final \
        --task_name MRPC --data_dir glue_data --output_dir out/mrpc --do_train --do_eval \
        --evaluation_strategy steps --eval_steps 50 --learning_rate 5e-5 --num_train_epochs 5 \
        --lr_scheduler_type polynomial --warmup_steps 50 --weight_decay 0.01

Flags are the seed's (HF ``run_glue.py``) names. Any HF-loadable checkpoint works: the model
comes from ``AutoModelForSequenceClassification`` (a fresh classifier head on an MLM
checkpoint) and the tokenizer from the same folder (or ``--tokenizer_name``). Data come from
GLUE's TSV files under ``--data_dir`` or, without it, from the hub's ``glue`` data set.
Everything the user can get wrong is checked before the model is loaded.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from hpc_bert.atomic import write_json_atomic
from hpc_bert.config.flags import check_choices, field, flat_dict, parse_config
from hpc_bert.data import tokenizer as data_tokenizer
from hpc_bert.errors import ConfigError, UserError, exit_on_user_error
from hpc_bert.glue import metrics as glue_metrics
from hpc_bert.glue.encode import EncodedTask, encode, subset
from hpc_bert.glue import prompt as glue_prompt
from hpc_bert.glue.step_counts import capped_warmup, training_steps
from hpc_bert.glue.run_files import start_record, write_predictions
from hpc_bert.glue.tasks import HUB_DATASET, TASK_ORDER, TaskSpec, get_task, load_task, load_test
from hpc_bert.layout import GLUE_RESULTS as RESULTS_FILE

STRATEGIES = ("no", "steps", "epoch")
SCHEDULERS = ("linear", "polynomial", "cosine", "constant", "constant_with_warmup", "inverse_sqrt")


@dataclass
class FinetuneConfig:
    model_name_or_path: str | None = field(None, help="HF checkpoint dir (or hub name when the hub is reachable)")
    tokenizer_name: str | None = field(None, help="tokenizer dir; default: --model_name_or_path")
    task_name: str | None = field(None, help=f"GLUE task: {', '.join(TASK_ORDER)}")
    data_dir: str | None = field(None, help="GLUE data root holding <TASK>/train.tsv; unset: the hub's glue set")
    dataset_name: str = field(HUB_DATASET, help="without --data_dir: the hub data set, or a local copy of it "
                                                "(save_to_disk folders or Parquet files under <config>/)")
    output_dir: str | None = field(None, help="where results.json goes")
    overwrite_output_dir: bool = field(False, help="replace results already in --output_dir")
    do_train: bool = field(False)
    do_eval: bool = field(False)
    do_predict: bool = field(False, help="write test-set predictions (label strings; STS-B scores) next to "
                                         "results.json, for python -m hpc_bert.glue submission")
    ignore_mismatched_sizes: bool = field(False, help="load a checkpoint whose classifier head has another "
                                                      "number of labels (e.g. STS-B from an MNLI model): new head")
    max_seq_length: int = field(128)
    max_train_samples: int | None = field(None, help="train on a fixed random subset of N examples")
    max_eval_samples: int | None = field(None, help="evaluate on a fixed random subset of N examples")
    per_device_train_batch_size: int = field(32)
    per_device_eval_batch_size: int = field(32)
    gradient_accumulation_steps: int = field(1)
    learning_rate: float = field(5e-5)
    weight_decay: float = field(0.0)
    adam_beta1: float = field(0.9)
    adam_beta2: float = field(0.999)
    adam_epsilon: float = field(1e-8)
    max_grad_norm: float = field(1.0)
    num_train_epochs: float = field(3.0)
    max_steps: int = field(-1, help="stop after N optimizer steps; -1: use --num_train_epochs")
    lr_scheduler_type: str = field("linear", choices=SCHEDULERS)
    warmup_steps: float = field(0, help="warmup steps (an integer) or a fraction of all steps (< 1)")
    eval_strategy: str | None = field(None, choices=STRATEGIES)
    evaluation_strategy: str | None = field(None, help="alias of --eval_strategy (transformers < 5 name)",
                                            choices=STRATEGIES)
    eval_steps: int | None = field(None, help="evaluate every N steps under --eval_strategy steps")
    logging_steps: int = field(50)
    seed: int = field(42)
    fp16: bool = field(False)
    bf16: bool = field(False)
    dataloader_num_workers: int = field(0)
    disable_tqdm: bool | None = field(None, help="default: no progress bar when stderr is not a terminal")
    save_model: bool = field(False, help="also save the fine-tuned model to --output_dir")
    # Pretraining may run without dropout (configs/pretrain/tiny.yaml; Geiping & Goldstein 2022),
    # while BERT fine-tunes with 0.1: this sets hidden, attention and classifier dropout.
    dropout: float | None = field(None, help="dropout while fine-tuning, e.g. 0.1 (BERT's); default: the checkpoint's")
    # A small model pretrained briefly gains most when its MLM head does the classifying (hpc_bert/glue/prompt.py).
    prompt: bool = field(False, help="prompt-based fine-tuning (Gao et al. 2021): the MLM head scores one label "
                                     "word per class at the mask of a template, instead of a new classifier head")
    prompt_template: str | None = field(None, help="with --prompt: slots {text_a} {text_b} {mask}, e.g. "
                                                   "'{text_a} It was {mask} .'; default: the task's")
    verbalizer: str | None = field(None, help="with --prompt: one label word per class in label order, "
                                              "e.g. terrible,great; default: the task's")

    def __post_init__(self):
        for name in ("model_name_or_path", "task_name", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        self.task_name = get_task(self.task_name).name
        if not (self.do_train or self.do_eval or self.do_predict):
            raise ConfigError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
        if self.eval_strategy and self.evaluation_strategy and self.eval_strategy != self.evaluation_strategy:
            raise ConfigError(f"--eval_strategy {self.eval_strategy} and --evaluation_strategy "
                              f"{self.evaluation_strategy} disagree: pass only one")
        self.eval_strategy = self.eval_strategy or self.evaluation_strategy or "no"
        self.evaluation_strategy = self.eval_strategy
        check_choices(self)
        for name in ("max_seq_length", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}: leave it unset for no limit")
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not self.num_train_epochs > 0 and self.max_steps <= 0:
            raise ConfigError(f"--num_train_epochs must be > 0, got {self.num_train_epochs}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.warmup_steps < 0:
            raise ConfigError("--weight_decay, --max_grad_norm and --warmup_steps must be >= 0")
        if self.warmup_steps >= 1 and not float(self.warmup_steps).is_integer():
            raise ConfigError(f"--warmup_steps {self.warmup_steps} must be a whole number of steps or a "
                              "fraction below 1")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}: e.g. --dropout 0.1")
        if self.fp16 and self.bf16:
            raise ConfigError("--fp16 and --bf16 are both set: choose one precision")
        if (self.prompt_template or self.verbalizer) and not self.prompt:
            raise ConfigError("--prompt_template and --verbalizer apply to prompt-based fine-tuning: pass --prompt too")
        if self.prompt:
            self.prompt_template, words = glue_prompt.resolve(get_task(self.task_name), self.prompt_template,
                                                              self.verbalizer)
            self.verbalizer = ",".join(words)


def check_output_dir(cfg: FinetuneConfig) -> None:
    results = os.path.join(cfg.output_dir, RESULTS_FILE)
    if os.path.exists(results):
        if not cfg.overwrite_output_dir:
            raise UserError(f"--output_dir {cfg.output_dir} already holds results ({RESULTS_FILE}): pass "
                            "--overwrite_output_dir to replace them, or choose another --output_dir")
        os.remove(results)  # a crash of the new run must not leave the old results looking current
    if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise UserError(f"--output_dir {cfg.output_dir} is a file: pass a folder")


def check_checkpoint(path: str, what: str) -> None:
    """A local path must be an HF model folder; anything else is tried as a hub name later."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"{what} {path} has no config.json: pass a folder written by save_pretrained "
                            "(e.g. RUN_DIR/finetune_checkpoints/final)")
    elif os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise UserError(f"{what} {path} does not exist or is not a folder: pass an HF checkpoint folder")


def load_tokenizer(cfg: FinetuneConfig):
    """The fine-tuning tokenizer: --tokenizer_name, else the checkpoint's own (data/tokenizer.py loads it)."""
    source = cfg.tokenizer_name or cfg.model_name_or_path
    check_checkpoint(source, "--tokenizer_name" if cfg.tokenizer_name else "--model_name_or_path")
    return data_tokenizer.load_tokenizer(source)


def load_model(cfg: FinetuneConfig, task: TaskSpec, tokenizer=None, label_ids: list[int] | None = None):
    """A classifier for the task: a new head, or with --prompt the MLM scoring label_ids at the mask."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification
    try:
        model_config = AutoConfig.from_pretrained(cfg.model_name_or_path)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load the model config of {cfg.model_name_or_path} ({first}): pass an HF "
                        "checkpoint folder to --model_name_or_path") from None
    max_pos = getattr(model_config, "max_position_embeddings", None)
    if max_pos is not None and "roberta" in str(getattr(model_config, "model_type", "")):
        max_pos -= (getattr(model_config, "pad_token_id", None) or 0) + 1  # RoBERTa positions start after padding_idx
    if max_pos is not None and cfg.max_seq_length > max_pos:
        raise UserError(f"--max_seq_length {cfg.max_seq_length} exceeds the model's {max_pos} positions: "
                        f"pass --max_seq_length {max_pos} or less")
    kwargs = {}
    if cfg.dropout is not None:
        kwargs.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                      classifier_dropout=cfg.dropout)
    if cfg.prompt:
        mlm = AutoModelForMaskedLM.from_pretrained(cfg.model_name_or_path, **kwargs)
        return glue_prompt.prompt_classifier(mlm, label_ids, tokenizer.mask_token_id)
    kwargs.update(num_labels=task.num_labels,
                  problem_type="regression" if task.is_regression else "single_label_classification")
    if not task.is_regression:
        kwargs["id2label"] = dict(enumerate(task.labels))
        kwargs["label2id"] = {label: i for i, label in enumerate(task.labels)}
    return AutoModelForSequenceClassification.from_pretrained(
        cfg.model_name_or_path, ignore_mismatched_sizes=cfg.ignore_mismatched_sizes, **kwargs)


def check_head(cfg: FinetuneConfig, task: TaskSpec) -> None:
    """A fine-tuned checkpoint's classifier head of another size needs --ignore_mismatched_sizes
    (transformers would otherwise die with a long traceback after the data are read)."""
    from transformers import AutoConfig
    try:
        model_config = AutoConfig.from_pretrained(cfg.model_name_or_path)
    except Exception:
        return  # load_model reports an unloadable checkpoint
    has_head = any(a.endswith("ForSequenceClassification") for a in getattr(model_config, "architectures", None) or ())
    if has_head and model_config.num_labels != task.num_labels and not cfg.prompt and not cfg.ignore_mismatched_sizes:
        raise UserError(f"{cfg.model_name_or_path} has a classifier head of {model_config.num_labels} label(s) and "
                        f"{task.name} needs {task.num_labels}: pass --ignore_mismatched_sizes to start {task.name} "
                        "with a new head on that model")


def _eval_history(log_history: list[dict]) -> list[dict]:
    out = []
    for entry in log_history:
        if "eval_loss" in entry:
            keep = {k[len("eval_"):]: v for k, v in entry.items() if k.startswith("eval_")
                    and not k.endswith(("runtime", "per_second"))}
            out.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **keep})
    return out


def _check_precision(cfg: FinetuneConfig) -> None:
    if cfg.fp16 or cfg.bf16:
        import torch  # not at the top: `--help` and the input checks stay free of torch's start-up
        if not torch.cuda.is_available():
            raise UserError("--fp16/--bf16 need a GPU and none is visible: drop the flag to train in fp32 on CPU")


def _prompt_label_ids(cfg: FinetuneConfig, tokenizer) -> list[int] | None:
    """The verbalizer's label token ids (with --prompt), checked before data and model load."""
    if not cfg.prompt:
        return None
    label_ids = glue_prompt.label_token_ids(tokenizer, tuple(cfg.verbalizer.split(",")))
    glue_prompt.check_room(cfg.prompt_template, tokenizer, cfg.max_seq_length)
    return label_ids


@dataclass
class _Datasets:
    train: EncodedTask | None
    eval: dict[str, EncodedTask]
    test: dict[str, EncodedTask]
    test_indices: dict[str, list[str]]


def _encode_datasets(cfg: FinetuneConfig, task: TaskSpec, tokenizer, use_types: bool, data: dict,
                     tests: dict) -> _Datasets:
    def encoded(examples, limit: int | None = None) -> EncodedTask:  # prompt_template is set only with --prompt
        return encode(subset(examples, limit), task, tokenizer, cfg.max_seq_length, use_types, cfg.prompt_template)

    return _Datasets(train=encoded(data["train"], cfg.max_train_samples) if cfg.do_train else None,
                     eval={s: encoded(data[s], cfg.max_eval_samples) for s in task.splits},
                     test={s: encoded(examples) for s, (_, examples) in tests.items()},
                     test_indices={s: indices for s, (indices, _) in tests.items()})


def _warmup_steps(cfg: FinetuneConfig, train_set: EncodedTask | None) -> int:
    if train_set is None:
        return cfg.warmup_steps
    warmup, note = capped_warmup(cfg.warmup_steps, training_steps(
        len(train_set), cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps,
        cfg.num_train_epochs, cfg.max_steps))
    if note:
        print(f"hpc_bert: note: {note}", file=sys.stderr, flush=True)
    return warmup


def _build_trainer(cfg: FinetuneConfig, task: TaskSpec, model, tokenizer, sets: _Datasets, warmup: int):
    import torch  # heavy imports stay out of the module's import (see _check_precision)
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return glue_metrics.compute_metrics(task, glue_metrics.predictions_from_logits(task, logits), pred.label_ids)

    disable_tqdm = cfg.disable_tqdm if cfg.disable_tqdm is not None else not sys.stderr.isatty()
    during_training = cfg.eval_strategy if cfg.do_eval else "no"
    args = TrainingArguments(
        output_dir=cfg.output_dir, do_train=cfg.do_train, do_eval=cfg.do_eval,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon, max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=warmup,
        eval_strategy=during_training, eval_steps=cfg.eval_steps, logging_steps=cfg.logging_steps,
        save_strategy="no", report_to="none", seed=cfg.seed, fp16=cfg.fp16, bf16=cfg.bf16,
        dataloader_num_workers=cfg.dataloader_num_workers, disable_tqdm=disable_tqdm,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns
    )
    # During training only the first dev split is scored (MNLI: matched), to keep periodic
    # evaluation affordable; every split is scored at the end.
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cfg.fp16 or cfg.bf16 else None)
    return Trainer(model=model, args=args, train_dataset=sets.train,
                   eval_dataset=sets.eval[task.splits[0]] if during_training != "no" else None,
                   processing_class=tokenizer, compute_metrics=compute, data_collator=collator)


def _train(cfg: FinetuneConfig, trainer, model, tokenizer) -> tuple[float, float | None]:
    """Train (and save the model when asked); returns (seconds, training loss)."""
    if not cfg.do_train:
        return 0.0, None
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    if cfg.save_model and cfg.prompt:  # the MLM itself: with the template and label words it is the classifier
        model.mlm.save_pretrained(cfg.output_dir)
        tokenizer.save_pretrained(cfg.output_dir)
    elif cfg.save_model:
        trainer.save_model(cfg.output_dir)
    return seconds, out.training_loss


def _evaluate(cfg: FinetuneConfig, task: TaskSpec, trainer, eval_sets: dict) -> tuple[dict, float]:
    """{split: {metric: value}} on every dev split, and the seconds it took."""
    if not cfg.do_eval:
        return {}, 0.0
    start = time.perf_counter()
    metrics_by_split = {}
    names = glue_metrics.metric_names(task) + ["loss"]
    for split, dataset in eval_sets.items():
        result = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=split)
        metrics_by_split[split] = {n: float(result[f"{split}_{n}"]) for n in names if f"{split}_{n}" in result}
    return metrics_by_split, time.perf_counter() - start


def _predict(cfg: FinetuneConfig, task: TaskSpec, trainer, sets: _Datasets) -> dict[str, str]:
    """Write predictions_<split>.tsv for each test split; {split: file name}."""
    written = {}
    for split, dataset in sets.test.items():
        logits = trainer.predict(dataset, metric_key_prefix=split).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        written[split] = write_predictions(cfg.output_dir, task, split, sets.test_indices[split],
                                           glue_metrics.predictions_from_logits(task, logits))
    return written


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune and/or evaluate; returns (and writes) the results record."""
    task = get_task(cfg.task_name)
    check_output_dir(cfg)
    check_checkpoint(cfg.model_name_or_path, "--model_name_or_path")
    check_head(cfg, task)
    _check_precision(cfg)
    tokenizer = load_tokenizer(cfg)
    label_ids = _prompt_label_ids(cfg, tokenizer)
    data = load_task(task, cfg.data_dir, with_train=cfg.do_train, dataset_name=cfg.dataset_name)
    tests = load_test(task, cfg.data_dir, cfg.dataset_name) if cfg.do_predict else {}

    import torch  # heavy imports after every input check (see _check_precision)
    import transformers
    transformers.set_seed(cfg.seed)  # before the model is built: the new classifier head depends on it
    model = load_model(cfg, task, tokenizer, label_ids)
    sets = _encode_datasets(cfg, task, tokenizer, getattr(model.config, "type_vocab_size", 2) >= 2, data, tests)
    warmup = _warmup_steps(cfg, sets.train)
    os.makedirs(cfg.output_dir, exist_ok=True)
    trainer = _build_trainer(cfg, task, model, tokenizer, sets, warmup)
    train_time, train_loss = _train(cfg, trainer, model, tokenizer)
    metrics_by_split, eval_time = _evaluate(cfg, task, trainer, sets.eval)
    scores = glue_metrics.task_scores(task, metrics_by_split)
    record = {
        "task": task.name,
        "learning_rate": cfg.learning_rate,
        "seed": cfg.seed,
        "checkpoint": cfg.model_name_or_path,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_train_epochs": cfg.num_train_epochs,
        "score": glue_metrics.main_score(task, scores),
        "scores": scores,
        "metrics": metrics_by_split,
        "train_time_s": round(train_time, 3),
        "eval_time_s": round(eval_time, 3),
        "train_loss": train_loss,
        "global_step": trainer.state.global_step,
        "num_train_examples": len(sets.train) if sets.train is not None else 0,
        "num_eval_examples": {s: len(d) for s, d in sets.eval.items()},
        "eval_history": _eval_history(trainer.state.log_history),
        "start_from": start_record(cfg.model_name_or_path),
        "warmup_steps": warmup,
        "predictions": _predict(cfg, task, trainer, sets),
        "device": str(trainer.args.device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": flat_dict(cfg),
    }
    write_json_atomic(os.path.join(cfg.output_dir, RESULTS_FILE), record)
    return record


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_config(FinetuneConfig, argv, prog="python -m hpc_bert.finetune",
                          description="Fine-tune a checkpoint on one GLUE task and write results.json")
    record = run(cfg)
    shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in record["scores"].items()) or "no evaluation"
    print(f"hpc_bert: {record['task']} lr {cfg.learning_rate:g} seed {cfg.seed}: {shown} "
          f"(train {record['train_time_s']:.0f} s) -> {os.path.join(cfg.output_dir, RESULTS_FILE)}", flush=True)
    return 0
