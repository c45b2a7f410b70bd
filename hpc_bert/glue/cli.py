"""python -m hpc_bert.glue {expand,run,aggregate,submission}

    expand CONFIG [--run_dir RUN_DIR] [--checkpoints A,B] [--data_dir D] [--index I | --count]
        table of array index -> run; with --index, that run's finetune command line;
        with --count, the number of runs (size the SLURM array as 0..N-1)
    run CONFIG [same flags] [--index I] [--force]
        fine-tune run I (a SLURM array task passes $SLURM_ARRAY_TASK_ID), or every run in
        turn without --index; runs whose results.json exists are skipped (requeue-safe)
        (runs with start_from, round two, start from the best first-round run's model)
    aggregate RUN_DIR [--exclude_from_average WNLI] [--output_dir DIR]
        RUN_DIR/glue_results.md and .csv from every results.json under RUN_DIR/glue/ (or,
        without one, under RUN_DIR: any folder of finetune output dirs)
    submission RUN_DIR [--checkpoint final] [--output FILE.zip]
        the GLUE server's zip from the --do_predict files of each task's chosen run
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

from hpc_bert.config.flags import field, parse_config
from hpc_bert.errors import ConfigError, UserError, exit_on_user_error
from hpc_bert.glue import aggregate as agg
from hpc_bert.glue import finetune
from hpc_bert.glue import grid as glue_grid
from hpc_bert.glue.submission import submission
from hpc_bert.glue.tasks import get_task

COMMANDS = ("expand", "run", "aggregate", "submission")


@dataclass
class GridArgs:
    run_dir: str | None = field(None, help="pretraining run dir: checkpoints in finetune_checkpoints/, "
                                           "results go to glue/ (default with --checkpoints: runs/glue_<config>)")
    checkpoints: tuple[str, ...] = field(default_factory=tuple,
                                         help="checkpoint folders, or names under RUN_DIR/finetune_checkpoints")
    data_dir: str | None = field(None, help="GLUE data root (overrides the config's data_dir)")
    index: int | None = field(None, help="one run of the grid (a SLURM array index)")
    count: bool = field(False, help="print only the number of runs")
    force: bool = field(False, help="run: redo runs that already have results.json")

    def __post_init__(self):
        if self.index is not None and self.index < 0:
            raise ConfigError(f"--index must be >= 0, got {self.index}")


@dataclass
class AggregateArgs:
    exclude_from_average: tuple[str, ...] = field(("WNLI",), help="tasks left out of the GLUE average ('' for none)")
    output_dir: str | None = field(None, help="where glue_results.md/.csv go (default: RUN_DIR)")

    def __post_init__(self):
        self.exclude_from_average = tuple(get_task(t).name for t in self.exclude_from_average if t)


@dataclass
class SubmissionArgs:
    checkpoint: str = field("final", help="the table row (fine-tune checkpoint) whose runs are submitted")
    output: str | None = field(None, help="zip to write (default: RUN_DIR/glue_submission_<checkpoint>.zip)")


def _split_positional(argv: list[str], what: str, usage: str) -> tuple[str, list[str]]:
    if any(a in ("-h", "--help") for a in argv):  # the flag parser prints the help and exits 0
        return "", argv
    if not argv or argv[0].startswith("-"):
        if "--config" in argv[:-1]:  # accept `--config FILE` as well as the positional
            i = argv.index("--config")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        raise UserError(f"missing {what}: usage: {usage}")
    return argv[0], argv[1:]


def _runs(config_path: str, args: GridArgs) -> tuple[list[glue_grid.GlueRun], str]:
    grid = glue_grid.load_grid(config_path)
    run_dir = args.run_dir or glue_grid.default_run_dir(config_path)
    checkpoints = glue_grid.resolve_checkpoints(grid, args.checkpoints, args.run_dir)
    return glue_grid.expand(grid, checkpoints, run_dir, args.data_dir), run_dir


def _pick(runs: list[glue_grid.GlueRun], index: int) -> glue_grid.GlueRun:
    if index >= len(runs):
        raise UserError(f"--index {index} is out of range: this grid has {len(runs)} runs (0..{len(runs) - 1}); "
                        "size the array with `expand CONFIG ... --count`")
    return runs[index]


def cmd_expand(argv: list[str]) -> int:
    config_path, rest = _split_positional(argv, "CONFIG", "python -m hpc_bert.glue expand CONFIG [--run_dir RUN_DIR]")
    args, _ = parse_config(GridArgs, rest, prog="python -m hpc_bert.glue expand")
    runs, run_dir = _runs(config_path, args)
    if args.count:
        print(len(runs))
    elif args.index is not None:
        print(_pick(runs, args.index).command())
    else:
        print(f"# {len(runs)} runs (SLURM --array=0-{len(runs) - 1}); results under {run_dir}/{glue_grid.GLUE_SUBDIR}/")
        first, second, _ = glue_grid.rounds(runs)
        if second:
            print(f"# round two (start_from): {len(second)} runs, run after the first round's {len(first)} "
                  "(python -m hpc_bert.submit submits them as a second array)")
        print(glue_grid.format_table(runs))
    return 0


def cmd_run(argv: list[str]) -> int:
    config_path, rest = _split_positional(argv, "CONFIG", "python -m hpc_bert.glue run CONFIG --run_dir RUN_DIR --index I")
    args, _ = parse_config(GridArgs, rest, prog="python -m hpc_bert.glue run")
    runs, _run_dir = _runs(config_path, args)
    # Without --index every run in turn, round two after the runs it starts from.
    chosen = [_pick(runs, args.index)] if args.index is not None else (glue_grid.first_round(runs)
                                                                        + glue_grid.second_round(runs))
    for run in chosen:
        if run.done and not args.force:
            print(f"hpc_bert: run {run.index} ({run.checkpoint} {run.task} lr {glue_grid.format_lr(run.learning_rate)} "
                  f"seed {run.seed}) already has results: skipped (pass --force to redo it)", flush=True)
            continue
        if not os.path.isdir(run.checkpoint_path):
            raise UserError(f"checkpoint {run.checkpoint_path} does not exist: pretraining has not saved "
                            f"{run.checkpoint!r} (not reached yet, or the run stopped early); check --checkpoints")
        argv = run.argv_from(glue_grid.best_source_model(_run_dir, run)) if run.start_from else run.argv
        print(f"hpc_bert: run {run.index}/{len(runs)}: {shlex.join(['python', '-m', 'hpc_bert.finetune', *argv])}",
              flush=True)
        # Finetune validates its own flags; --force maps onto its overwrite flag.
        cfg, _ = parse_config(finetune.FinetuneConfig, argv + (["--overwrite_output_dir"] if args.force else []),
                              prog="python -m hpc_bert.finetune")
        record = finetune.run(cfg)
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in record["scores"].items())
        print(f"hpc_bert: run {run.index}: {shown} (train {record['train_time_s']:.0f} s)", flush=True)
    return 0


def cmd_aggregate(argv: list[str]) -> int:
    run_dir, rest = _split_positional(argv, "RUN_DIR", "python -m hpc_bert.glue aggregate RUN_DIR")
    args, _ = parse_config(AggregateArgs, rest, prog="python -m hpc_bert.glue aggregate")
    rows, md_path, csv_path = agg.aggregate(run_dir, args.exclude_from_average, args.output_dir)
    with open(md_path) as fh:
        print(fh.read(), end="")
    print(f"hpc_bert: wrote {md_path} and {csv_path} ({len(rows)} checkpoint row(s))")
    return 0


def cmd_submission(argv: list[str]) -> int:
    run_dir, rest = _split_positional(argv, "RUN_DIR", "python -m hpc_bert.glue submission RUN_DIR [--checkpoint final]")
    args, _ = parse_config(SubmissionArgs, rest, prog="python -m hpc_bert.glue submission")
    submission(run_dir, args.checkpoint, args.output)
    return 0


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r}: choose one of {', '.join(COMMANDS)}")
    return {"expand": cmd_expand, "run": cmd_run, "aggregate": cmd_aggregate,
            "submission": cmd_submission}[command](rest)
