"""What runs inside a submitted job. Picklable callables that hold only flags and paths:
a requeued job reads all its state from the run dir, never from a pickle.

The pretraining job maps the trainer's exit status onto the scheduler: 0 -> done,
EXIT_REQUEUE -> requeue (SLURM: ``scontrol requeue``; submitit's LocalExecutor: its
requeue exit code), anything else -> the job fails, so ``afterok`` dependents are killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from hpc_bert import runenv
from hpc_bert.errors import EXIT_REQUEUE
from hpc_bert.glue.cli import main as glue_main
from hpc_bert.launch.cancel import cancel_requested
from hpc_bert.launch.queue import upstream_failure
from hpc_bert.layout import GLUE_TABLE_CSV
from hpc_bert.pretrain import cli
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.wandb_run import log_glue_table, read_record


def _export_run_env() -> tuple[int, str, bool]:
    """Rank variables and the allocation deadline for the trainer, from submitit's public view of
    the job (JobEnvironment); returns (rank, job id, local?)."""
    import submitit
    env = submitit.JobEnvironment()
    local = env.cluster == "local"
    hosts = env.hostnames if not local else ["127.0.0.1"]
    os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
                      # the job's own, never the submitting shell's (sbatch copies its environment)
                      MASTER_ADDR=hosts[0], MASTER_PORT=str(runenv.master_port(env.job_id)))
    end = runenv.local_end_time() if local else runenv.slurm_end_time(str(env.job_id))
    if end:
        os.environ[runenv.DEADLINE_ENV] = str(end)
    return env.global_rank, str(env.job_id), local


def ignore_late_stop_signals() -> None:
    """The budget is spent and saved: ignore the time-limit / preemption signals from here on.

    The budget's end can coincide with the allocation's warning signal. Python resets its own
    handlers to the default (terminate) while the interpreter shuts down, so a SIGUSR2 arriving
    then would kill a finished job, SLURM would mark it failed, and the afterok GLUE array would be
    cancelled. SIG_IGN survives the shutdown. The signals are the trainer's stop signals."""
    from hpc_bert.pretrain.distributed import SIGNAL_REASONS  # imports torch: only once training ran
    for signum in SIGNAL_REASONS:
        signal.signal(signum, signal.SIG_IGN)


DONE, REQUEUE = "done", "requeue"


def after_training(rc: int, allocations: int, max_requeues: int) -> str:
    """What the pretraining job does with the trainer's exit status: DONE (0), REQUEUE
    (EXIT_REQUEUE, while fewer than ``max_requeues`` requeues ran: ``allocations`` - 1), else it
    fails with RuntimeError, so that SLURM marks it failed and ``afterok`` dependents are killed."""
    if rc == 0:
        return DONE
    if rc == EXIT_REQUEUE:
        if max(0, allocations - 1) >= max_requeues:
            raise RuntimeError(f"requeue limit {max_requeues} reached before the budget was spent: "
                               "resubmit the same command to continue from the last checkpoint")
        return REQUEUE
    raise RuntimeError(f"pretraining exited with status {rc}: see the job's log")


def allocations_recorded(run_dir: str) -> int:
    ledger = Ledger.load(run_dir)
    return len(ledger.allocations) if ledger else 0


class PretrainJob:
    def __init__(self, train_argv: list[str], run_dir: str, max_requeues: int, workdir: str,
                 allocations_before: int = 0):
        self.train_argv = list(train_argv)
        self.allocations_before = allocations_before  # of earlier chains on this run dir (a budget change)
        self.run_dir = run_dir
        self.max_requeues = max_requeues
        self.workdir = workdir

    def __call__(self) -> int:
        os.chdir(self.workdir)
        rank, job_id, local = _export_run_env()
        try:
            rc = cli.main(self.train_argv)
        except SystemExit as e:
            if e.code not in (0, 1, 2, EXIT_REQUEUE):
                raise  # submitit's own requeue (a time-limit signal during startup) exits this way
            rc = e.code  # user errors exit through sys.exit(2)
        if rc == EXIT_REQUEUE:
            if cancel_requested(self.run_dir):
                raise RuntimeError("stopped by python -m hpc_bert.submit --cancel after saving a checkpoint: "
                                   "resubmit the same command to continue")
        # the run dir, not the pickle, says how many allocations ran
        mine = allocations_recorded(self.run_dir) - self.allocations_before if rc == EXIT_REQUEUE else 0
        if after_training(rc, mine,
                          self.max_requeues) == REQUEUE:
            if local:
                from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE  # the LocalExecutor relaunches on it
                sys.exit(LOCAL_REQUEUE_RETURN_CODE)
            if rank == 0:
                # SLURM puts the job back in the queue and ends this allocation (as submitit does);
                # an array task (A_i) alone, never its whole array.
                subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)
            sys.exit(EXIT_REQUEUE)
        ignore_late_stop_signals()
        return 0

    def checkpoint(self):
        """A time-limit signal before the trainer started: requeue unchanged (no state here)."""
        import submitit
        return submitit.helpers.DelayedSubmission(self)


class GlueTask:
    """One cell of the GLUE grid (a SLURM array task or a local job)."""

    def __init__(self, glue_config: str, run_dir: str, checkpoints: list[str], workdir: str):
        self.glue_config, self.run_dir, self.checkpoints, self.workdir = glue_config, run_dir, checkpoints, workdir

    def __call__(self, index: int) -> int:
        os.chdir(self.workdir)
        return glue_main(["run", self.glue_config, "--run_dir", self.run_dir, "--checkpoints",
                          ",".join(self.checkpoints), "--index", str(index)])


class AggregateTask:
    """The GLUE table (``afterany`` on the array, so it also runs when the chain failed upstream:
    then it ends with one line naming the failed job and its log), logged to W&B when the run has one."""

    def __init__(self, run_dir: str, workdir: str):
        self.run_dir, self.workdir = run_dir, workdir

    def __call__(self) -> int:
        os.chdir(self.workdir)
        failure = upstream_failure(self.run_dir)
        if failure:
            print(f"hpc_bert: error: {failure}", file=sys.stderr, flush=True)
            raise RuntimeError(failure)
        rc = glue_main(["aggregate", self.run_dir])
        if rc == 0 and read_record(self.run_dir) is not None:
            log_glue_table(self.run_dir, os.path.join(self.run_dir, GLUE_TABLE_CSV))
        return rc
