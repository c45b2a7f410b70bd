"""``submit``'s own flags (SubmitConfig) and how a command line splits into them and the
pretraining flags, every bad input of both listed at once."""
from __future__ import annotations

import os
from dataclasses import dataclass

from hpc_bert.config.flags import check_choices, field, leaf_fields, parse_config
from hpc_bert.config.pretrain import PretrainConfig, check_hours
from hpc_bert.errors import gather, raise_all
from hpc_bert.launch.site_defaults import CPU_TEST_CONFIG, resolve_recipe

HELP_FLAGS = ("-h", "--help")


@dataclass
class SubmitConfig:
    budget: float = field(0.0, help="training budget in hours (sets --total_training_time)")
    pretrain_config: str | None = field(None, help="pretraining YAML (alias: --config); default: on SLURM the "
                                        "paper's recipe (configs/pretrain/academic-bert-large.yaml) on GPUs, "
                                        "on --cluster local configs/pretrain/tiny.yaml")
    cluster: str = field("auto", choices=("slurm", "local", "auto"))
    allocation_hours: float | str = field("auto", help="time limit of one allocation in hours; auto = the "
                                                         "partition's MaxTime (and the QOS's MaxWall), else 24")
    partition: str | None = field(None)
    account: str | None = field(None)
    qos: str | None = field(None)
    nodes: int = field(1)
    gpus_per_node: int | None = field(None, help="one task per GPU, 0 = a CPU job; default: the partition's GPUs "
                                                  "(GRES) with the paper's recipe, 0 with --config")
    cpus_per_task: int = field(2)
    mem_gb: int = field(0, help="0 = the partition's default")
    glue: str | None = field(None, help="GLUE grid YAML (configs/glue/*.yaml); none = pretraining only")
    glue_allocation_hours: float = field(2.0)
    glue_parallelism: int = field(16, help="array tasks running at once")
    run_dir: str | None = field(None, help="default: the pretraining config's --output_dir")
    signal_delay_s: int = field(0, help="time-limit signal lead; 0 = from the measured checkpoint save")
    requeue_margin: int = field(3, help="extra requeues beyond budget / allocation (preemptions, crashes)")
    dry_run: bool = field(False, help="print the job scripts, submit nothing")
    prepare: str | None = field(None, help='"PREPARE FLAGS": make --dataset_path first (data jobs, pretraining afterok)')
    slurm_additional: tuple[str, ...] = field((), repeatable=True,
                                              help="KEY=VALUE (or KEY) sbatch option for every job of the chain, "
                                                   "e.g. constraint=a100, exclusive, gres=gpu:a100:8, "
                                                   "reservation=R, mail-type=END")
    glue_slurm_additional: tuple[str, ...] = field((), repeatable=True,
                                                   help="KEY=VALUE for the GLUE array and aggregation only; "
                                                        "wins over --slurm_additional (KEY= drops KEY)")
    setup: tuple[str, ...] = field((), repeatable=True,
                                   help="shell line run in each job before training / fine-tuning, "
                                        "e.g. 'module load cuda/12.4'")
    cancel: str | None = field(None, help="RUN_DIR: stop its chain (the running job saves first), "
                                          "cancel the pending GLUE array and aggregation")

    def __post_init__(self):
        problems = []
        gather(problems, lambda: check_choices(self))
        gather(problems, lambda: check_hours("budget", self.budget))
        if self.allocation_hours != "auto":
            try:
                self.allocation_hours = float(self.allocation_hours)
                if not self.allocation_hours > 0:
                    problems.append(f"--allocation_hours must be > 0, got {self.allocation_hours:g}")
            except ValueError:
                problems.append(f"--allocation_hours expects hours or auto, got {self.allocation_hours!r}")
        if self.gpus_per_node is not None and self.gpus_per_node < 0:
            problems.append(f"--gpus_per_node must be >= 0, got {self.gpus_per_node}")
        problems += [f"--{name} must be >= 1" for name in ("nodes", "cpus_per_task", "glue_parallelism")
                     if getattr(self, name) < 1]
        raise_all(problems)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate submit's own flags (and -h / --help) from pretraining flags (which go to the trainer)."""
    own = {f"--{n}" for n in leaf_fields(SubmitConfig)} | {f"--no_{n}" for n in leaf_fields(SubmitConfig)}
    own |= {"--config", *HELP_FLAGS}
    mine, train = [], []
    i = 0
    while i < len(argv):
        flag = argv[i].split("=")[0]
        target = mine if flag in own else train
        target.append(argv[i])
        # --prepare's value is itself a list of flags ("--input corpus/ ...")
        if "=" not in argv[i] and i + 1 < len(argv) and flag not in HELP_FLAGS \
                and (not argv[i + 1].startswith("--") or flag == "--prepare"):
            target.append(argv[i + 1])
            i += 1
        i += 1
    return [("--pretrain_config" if a == "--config" else a) for a in mine], train


def parse_both(argv: list[str]) -> tuple[SubmitConfig, PretrainConfig, list[str]]:
    """Submit's flags and the pretraining flags, every bad input of both listed at once."""
    mine, train_flags = split_argv(argv)
    problems: list[str] = []
    sub = gather(problems, lambda: parse_config(
        SubmitConfig, mine, prog="python -m hpc_bert.submit",
        description="Pretraining with requeues, then the GLUE array, then the table. "
                    "Flags not listed here are pretraining flags: see python -m hpc_bert.train --help.")[0])
    if sub:
        gather(problems, lambda: resolve_recipe(sub))
    # with submit's own flags wrong, the pretraining flags are still checked (against the config named)
    config = (sub.pretrain_config if sub else _flag_value(mine, "--pretrain_config", None)) or CPU_TEST_CONFIG
    if not os.path.isfile(config):
        raise_all(problems + [f"pretraining config {config} does not exist: pass --config FILE.yaml "
                              "(see configs/pretrain/)"])
    train_argv = ["--config", config, *train_flags]
    if sub:
        train_argv += ["--total_training_time", str(sub.budget)] + (["--output_dir", sub.run_dir] if sub.run_dir else [])
    cfg = gather(problems, lambda: parse_config(PretrainConfig, train_argv,
                                                prog="python -m hpc_bert.submit (pretraining flags)")[0])
    raise_all(problems)
    return sub, cfg, train_argv


def _flag_value(argv: list[str], flag: str, default: str | None) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
    return default
