"""``python -m hpc_bert.submit --run_dir R --budget 48``: the same chain again, under a new budget.

submit saves its flags in RUN_DIR/submit_args.json; a later submit that names the run dir and
no pretraining config reuses them, the flags given now winning (so ``--budget`` alone changes
the budget). Before anything is submitted or written, the trainer's own decision on the new
budget (pretrain/budget_change.py) runs on the run dir's checkpoints, so a refusal is the
same one line here as in the trainer and leaves the run dir as it was.
"""
from __future__ import annotations

import os
import time

from hpc_bert.atomic import read_json, write_json_atomic
from hpc_bert.launch.cancel import cancel_chain
from hpc_bert.launch.queue import read_chain
from hpc_bert.layout import SUBMIT_ARGS_FILE
from hpc_bert.pretrain import budget_change
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.runlock import check_not_live, live_owner

CONFIG_FLAGS = ("--config", "--pretrain_config")


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def with_saved_args(argv: list[str]) -> list[str]:
    """``argv`` after the run dir's saved submit flags when it names a run dir that has them and
    no pretraining config; otherwise ``argv`` unchanged (a first submission)."""
    run_dir = _flag_value(argv, "--run_dir")
    if run_dir is None or any(_flag_value(argv, f) is not None for f in CONFIG_FLAGS):
        return argv
    saved = read_json(os.path.join(run_dir, SUBMIT_ARGS_FILE))
    return [*saved["argv"], *argv] if saved else argv  # argparse: the later value of a flag wins


def save_args(run_dir: str, argv: list[str]) -> None:
    write_json_atomic(os.path.join(run_dir, SUBMIT_ARGS_FILE), {"argv": list(argv)})


def running_slurm_chain(run_dir: str) -> bool:
    """A chain submitted to SLURM trains in ``run_dir`` now (a budget change stops it first)."""
    chain = read_chain(run_dir)
    return bool(chain) and chain.get("cluster") == "slurm" and live_owner(run_dir) is not None


def stop_running_chain(run_dir: str, wait_s: float = 120.0) -> bool:
    """Stop a running SLURM chain as ``submit --cancel`` does (the trainer saves a checkpoint and exits),
    then wait for its lock to go, so that a new chain resumes from that checkpoint; False if none runs."""
    if not running_slurm_chain(run_dir):
        return False
    print(f"hpc_bert: the chain of {run_dir} is running: stopping it first (its trainer saves a checkpoint)",
          flush=True)
    cancel_chain(["--cancel", run_dir])
    deadline = time.monotonic() + wait_s
    while live_owner(run_dir) is not None and time.monotonic() < deadline:
        time.sleep(1)
    return True


def check_run_dir(cfg) -> str | None:
    """Before a submission: the run dir is not in use (unless a budget change will stop its running SLURM
    chain first), and what a new budget does to it (``check_budget_change``)."""
    run_dir = cfg.checkpoint.output_dir
    if not os.path.isdir(run_dir):
        return None
    change = check_budget_change(cfg)
    ledger = Ledger.load(run_dir)  # a running chain may have no checkpoint yet: its ledger has the budget
    if change is None and ledger is not None and abs(ledger.budget_s - cfg.schedule.budget_s) > 1e-6:
        change = f"budget {ledger.budget_s / 3600:.4g} h -> {cfg.schedule.total_training_time:g} h"
    if not (change and running_slurm_chain(run_dir)):
        check_not_live(run_dir)
    return change


def check_budget_change(cfg) -> str | None:
    """The trainer's decision on ``cfg``'s budget for a run dir that already trained: raises its
    one-line refusal, or returns a line saying what the change does (None: no change)."""
    from hpc_bert.pretrain.checkpoint import complete_checkpoints, find_latest, read_meta  # torch: keep it out of
    run_dir = cfg.checkpoint.output_dir                                                   # submit's start-up
    newest = find_latest(run_dir)
    if newest is None:
        return None
    resume = budget_change.decide(newest, [read_meta(run_dir, t) for t in complete_checkpoints(run_dir)], cfg)
    c = resume.change
    if c is None:
        return None
    return (f"budget {c['old_budget_s'] / 3600:.4g} h -> {c['new_budget_s'] / 3600:.4g} h ({c['kind']}): "
            f"the pretraining job resumes {c['from_tag']}")
