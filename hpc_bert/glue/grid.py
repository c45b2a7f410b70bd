"""A GLUE grid (YAML) -> a numbered list of fine-tune runs, one per SLURM array index.

The grid is checkpoints x tasks x batch sizes x learning rates x seeds, in that order. The
numbering must be the same when ``submit`` sizes the job array (before pretraining has saved
anything) and when each array task looks up its run, so it depends only on the config and
the checkpoint *names*: pass them with ``--checkpoints marker_0.25,final`` (the names follow
from the pretraining config, see ``checkpoint_names``). Discovering them from
RUN_DIR/finetune_checkpoints is for interactive use after pretraining has finished.

Layout: checkpoints RUN_DIR/finetune_checkpoints/<name>/, results
RUN_DIR/glue/<name>/<task>/lr<lr>_seed<seed>[_bs<batch>]/results.json.

Two rounds (MosaicBERT's protocol): ``start_from: {RTE: MNLI}`` fine-tunes RTE not from the
checkpoint but from the best MNLI run of that checkpoint (its runs save their model). Those runs
are round two (``second_round``): submit runs them as a second array after the MNLI runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from hpc_bert.config.flags import build_config, read_yaml
from hpc_bert.errors import ConfigError, UserError
from hpc_bert.layout import FINAL_NAME, FINETUNE_DIR, MARKER_PREFIX, marker_name  # noqa: F401
from hpc_bert.layout import GLUE_DIR as GLUE_SUBDIR
from hpc_bert.glue.finetune import FinetuneConfig
from hpc_bert.glue.run_files import has_results, read_results
from hpc_bert.glue.tasks import DEFAULT_EXCLUDED_FROM_AVERAGE, TASK_ORDER, get_task

CHECKPOINTS_SUBDIR = FINETUNE_DIR
# Flags the grid itself sets for every run; the `finetune:` section may not set them.
GRID_OWNED = ("model_name_or_path", "task_name", "learning_rate", "seed", "output_dir",
              "per_device_train_batch_size", "num_train_epochs", "data_dir")


def checkpoint_names(markers: Sequence[float], at_end: bool) -> list[str]:
    """The fine-tune checkpoint names a pretraining run will save, in budget order."""
    return [marker_name(m) for m in sorted(markers)] + ([FINAL_NAME] if at_end else [])


def budget_fraction(name: str) -> float | None:
    """marker_0.25 -> 0.25, final -> 1.0, anything else -> None (e.g. an outside checkpoint)."""
    if name == FINAL_NAME:
        return 1.0
    if name.startswith(MARKER_PREFIX):
        try:
            return float(name[len(MARKER_PREFIX):])
        except ValueError:
            return None
    return None


def checkpoint_sort_key(name: str) -> tuple:
    fraction = budget_fraction(name)
    return (fraction is None, fraction if fraction is not None else 0.0, name)


def format_lr(lr: float) -> str:
    """5e-05 -> '5e-5', 0.0001 -> '1e-4': short, and the same for every spelling of a value."""
    mantissa, exponent = f"{lr:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


@dataclass
class GridConfig:
    tasks: tuple[str, ...] = TASK_ORDER
    learning_rates: tuple[float, ...] = (5e-5, 8e-5, 1e-4)
    seeds: tuple[int, ...] = (42,)
    batch_sizes: tuple[int, ...] = (32,)
    num_train_epochs: float = 3.0
    data_dir: str | None = None
    checkpoints: tuple[str, ...] = ()
    exclude_from_average: tuple[str, ...] = DEFAULT_EXCLUDED_FROM_AVERAGE
    finetune: dict = dataclasses.field(default_factory=dict)
    task_overrides: dict = dataclasses.field(default_factory=dict)
    start_from: dict = dataclasses.field(default_factory=dict)  # {task: task whose best fine-tuned model it starts from}
    source: str = "<grid>"

    def __post_init__(self):
        self.tasks = tuple(get_task(t).name for t in self.tasks)
        self.exclude_from_average = tuple(get_task(t).name for t in self.exclude_from_average)
        for name in ("tasks", "learning_rates", "seeds", "batch_sizes"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{self.source}: `{name}` is empty: list at least one value")
            if len(set(values)) != len(values):
                raise ConfigError(f"{self.source}: `{name}` lists a value twice: list each once")
        if any(not lr > 0 for lr in self.learning_rates) or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"{self.source}: learning rates and batch sizes must be positive")
        self.finetune = _check_finetune_flags(self.finetune, f"{self.source}: finetune")
        overrides = {}
        for task, flags in (self.task_overrides or {}).items():
            name = get_task(task).name
            overrides[name] = _check_finetune_flags(flags, f"{self.source}: task_overrides.{task}",
                                                    allowed_owned=("num_train_epochs",))
        self.task_overrides = overrides
        self.start_from = {get_task(t).name: get_task(s).name for t, s in (self.start_from or {}).items()}
        for task, origin in self.start_from.items():
            if task not in self.tasks or origin not in self.tasks:
                raise ConfigError(f"{self.source}: start_from {task}: {origin} names a task not in `tasks`: "
                                  "list both tasks there")
            if origin == task or origin in self.start_from:
                raise ConfigError(f"{self.source}: start_from {task}: {origin}: the model to start from must come "
                                  "from a first-round task (one not itself in start_from)")
        for task in self.tasks:  # build each run's config once now: a bad value fails here
            build_config(FinetuneConfig, {**self.finetune_values(task), "model_name_or_path": "x",
                                          "task_name": task, "output_dir": "x", "learning_rate": 1e-5,
                                          "do_train": True})

    def finetune_values(self, task: str) -> dict[str, Any]:
        values = {"do_train": True, "do_eval": True, "num_train_epochs": self.num_train_epochs}
        values.update(self.finetune)
        values.update(self.task_overrides.get(task, {}))
        return values


def _check_finetune_flags(flags: Any, where: str, allowed_owned: Sequence[str] = ()) -> dict[str, Any]:
    if flags is None:
        return {}
    if not isinstance(flags, dict):
        raise ConfigError(f"{where} must be a mapping of finetune flag: value")
    valid = [f.name for f in dataclasses.fields(FinetuneConfig)]
    out = {}
    for key, value in flags.items():
        key = str(key).replace("-", "_")
        if key in GRID_OWNED and key not in allowed_owned:
            raise ConfigError(f"{where} sets {key}, which the grid sets per run: use the grid's keys "
                              "(tasks, learning_rates, seeds, batch_sizes, num_train_epochs, data_dir)")
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
            hint = ("did you mean " + " or ".join(near) + "?") if near else "see python -m hpc_bert.finetune --help"
            raise ConfigError(f"{where} has unknown finetune flag {key!r}: {hint}")
        out[key] = value
    return out


def load_grid(path: str) -> GridConfig:
    data = read_yaml(path)
    valid = [f.name for f in dataclasses.fields(GridConfig) if f.name != "source"]
    values: dict[str, Any] = {"source": path}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
            hint = ("did you mean " + " or ".join(near) + "?") if near else "valid keys: " + ", ".join(valid)
            raise ConfigError(f"unknown key {key!r} in {path}: {hint}")
        values[key] = value
    try:
        for key, kind in (("tasks", str), ("learning_rates", float), ("seeds", int), ("batch_sizes", int),
                          ("checkpoints", str), ("exclude_from_average", str)):
            if key in values:
                raw = values[key]
                raw = [raw] if not isinstance(raw, (list, tuple)) else raw
                values[key] = tuple(kind(v) for v in raw)
        if "start_from" in values and not isinstance(values["start_from"], dict):
            raise TypeError("start_from must be a mapping such as {RTE: MNLI}")
        if "num_train_epochs" in values:
            values["num_train_epochs"] = float(values["num_train_epochs"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: bad value ({e}): learning_rates are numbers, seeds and batch_sizes integers") from None
    return GridConfig(**values)


@dataclass
class GlueRun:
    index: int
    checkpoint: str          # name: the row of the GLUE table
    checkpoint_path: str
    task: str
    learning_rate: float
    seed: int
    batch_size: int
    output_dir: str
    argv: list[str]          # flags of python -m hpc_bert.finetune
    start_from: str | None = None  # round two: the task whose best run's model --model_name_or_path becomes

    @property
    def done(self) -> bool:
        return has_results(self.output_dir)

    def command(self) -> str:
        return shlex.join(["python", "-m", "hpc_bert.finetune", *self.argv])

    def argv_from(self, model_path: str) -> list[str]:
        """A round-two run's flags once the model it starts from is known."""
        return ["--model_name_or_path", model_path, *self.argv[2:]]


def second_round(runs: Sequence[GlueRun]) -> list[GlueRun]:
    """The runs that start from another task's fine-tuned model: they wait for the first round."""
    return [r for r in runs if r.start_from]


def first_round(runs: Sequence[GlueRun]) -> list[GlueRun]:
    return [r for r in runs if not r.start_from]


def rounds(runs: Sequence[GlueRun]) -> tuple[list[int], list[int], list[int]]:
    """Array indices (first round, second round, first-round runs the second waits for): the
    launcher submits the second round `afterok` on the runs whose models it starts from."""
    second = second_round(runs)
    origins = {(r.checkpoint, r.start_from) for r in second}
    return ([r.index for r in first_round(runs)], [r.index for r in second],
            [r.index for r in first_round(runs) if (r.checkpoint, r.task) in origins])


def best_source_model(run_dir: str, run: GlueRun) -> str:
    """The output dir (a saved model) of the best-scoring first-round run of ``run.start_from``
    on the same checkpoint; ties go to the smaller learning rate, then seed."""
    folder = os.path.join(run_dir, GLUE_SUBDIR, run.checkpoint, run.start_from)
    found = []
    for leaf in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, leaf)
        try:
            rec = read_results(path)
        except (OSError, ValueError):
            continue
        if rec.get("score") is not None and os.path.isfile(os.path.join(path, "config.json")):
            found.append((-rec["score"], float(rec["learning_rate"]), int(rec["seed"]), path))
    if not found:
        raise UserError(f"run {run.index} ({run.task} from {run.start_from}) needs a finished {run.start_from} run "
                        f"with its saved model under {folder}/: run the first round first (its array indices "
                        f"are the runs without start_from in `expand`)")
    return min(found)[3]


def resolve_checkpoints(grid: GridConfig, checkpoints: Sequence[str], run_dir: str | None) -> list[tuple[str, str]]:
    """[(name, path)]: explicit entries are folders or names under RUN_DIR/finetune_checkpoints;
    with none given, the grid's `checkpoints`, else every saved one found in RUN_DIR."""
    entries = list(checkpoints) or list(grid.checkpoints)
    ckpt_root = os.path.join(run_dir, CHECKPOINTS_SUBDIR) if run_dir else None
    if not entries:
        if ckpt_root is None:
            raise UserError("no checkpoints to fine-tune: pass --run_dir RUN_DIR (uses RUN_DIR/"
                            f"{CHECKPOINTS_SUBDIR}/*) or --checkpoints DIR1,DIR2")
        if not os.path.isdir(ckpt_root):
            raise UserError(f"{ckpt_root} does not exist (pretraining saved no fine-tune checkpoint yet): pass "
                            "the expected names, e.g. --checkpoints marker_0.5,final")
        # A folder is a checkpoint once it has config.json; `.tmp` ones are still being written.
        entries = sorted((d for d in os.listdir(ckpt_root) if not d.endswith(".tmp")
                          and os.path.isfile(os.path.join(ckpt_root, d, "config.json"))), key=checkpoint_sort_key)
        if not entries:
            raise UserError(f"{ckpt_root} holds no HF checkpoint folder (with config.json): let pretraining "
                            "save fine-tune checkpoints, or pass --checkpoints DIR1,DIR2")
    out: list[tuple[str, str]] = []
    for entry in entries:
        entry = entry.rstrip("/")
        if os.path.isdir(entry) or ckpt_root is None or os.sep in entry:
            name, path = os.path.basename(entry), entry
        else:
            name, path = entry, os.path.join(ckpt_root, entry)
        if any(name == n for n, _ in out):
            raise UserError(f"two checkpoints are named {name!r}: GLUE rows are keyed by folder name; rename one")
        out.append((name, path))
    return out


def default_run_dir(grid_path: str) -> str:
    return os.path.join("runs", "glue_" + os.path.splitext(os.path.basename(grid_path))[0])


def expand(grid: GridConfig, checkpoints: Sequence[tuple[str, str]], run_dir: str,
           data_dir: str | None = None) -> list[GlueRun]:
    data_dir = data_dir or grid.data_dir
    runs: list[GlueRun] = []
    for name, path in checkpoints:
        for task in grid.tasks:
            values = grid.finetune_values(task)
            for bs in grid.batch_sizes:
                for lr in grid.learning_rates:
                    for seed in grid.seeds:
                        leaf = f"lr{format_lr(lr)}_seed{seed}" + (f"_bs{bs}" if len(grid.batch_sizes) > 1 else "")
                        out = os.path.join(run_dir, GLUE_SUBDIR, name, task, leaf)
                        origin = grid.start_from.get(task)
                        model = f"<best {origin} run of {name}>" if origin else path
                        argv = ["--model_name_or_path", model, "--task_name", task, "--output_dir", out,
                                "--learning_rate", format_lr(lr), "--seed", str(seed),
                                "--per_device_train_batch_size", str(bs)]
                        if data_dir:
                            argv += ["--data_dir", data_dir]
                        for key, value in values.items():
                            argv += [f"--{key}", _flag_value(value)]
                        if task in grid.start_from.values():  # round two starts from these runs' models
                            argv += ["--save_model", "true"]
                        if origin and get_task(origin).num_labels != get_task(task).num_labels:
                            argv += ["--ignore_mismatched_sizes", "true"]
                        runs.append(GlueRun(len(runs), name, path, task, lr, seed, bs, out, argv, origin))
    return runs


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def format_table(runs: Sequence[GlueRun]) -> str:
    header = ("index", "checkpoint", "task", "lr", "seed", "batch", "done", "output_dir")
    rows = [header] + [(str(r.index), r.checkpoint, r.task + (f" (from {r.start_from})" if r.start_from else ""),
                        format_lr(r.learning_rate), str(r.seed),
                        str(r.batch_size), "yes" if r.done else "-", r.output_dir) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
