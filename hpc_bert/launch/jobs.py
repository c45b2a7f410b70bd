"""What runs inside a submitted job. Picklable callables that hold only flags and paths:
a requeued job reads all its state from the run dir, never from a pickle.

The pretraining job maps the trainer's exit status onto the scheduler: 0 -> done,
EXIT_REQUEUE -> requeue (SLURM: ``scontrol requeue``; submitit's LocalExecutor: its
requeue exit code), or, after ``submit --cancel``, the job ends (status 0, the ledger says
cancelled); anything else -> the job fails, so ``afterok`` dependents are killed. Every
ending leaves one line at the end of the job's log and no traceback.
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


class JobFailed(Exception):
    """The job ends failed (SLURM: FAILED, so ``afterok`` dependents are killed) with ``status``.

    ``line``: the one error line to print, None when the trainer already printed its own. Raised
    and caught inside the job, which then exits without a traceback: the log ends with the line
    that matters."""

    def __init__(self, line: str | None, status: int):
        super().__init__(line or f"pretraining exited with status {status}")
        self.line, self.status = line, status


class FailedExit(SystemExit):
    """How a failed job ends: submitit passes a SystemExit through without a traceback, and the
    sweep's array task tells this one (the member failed) from the exits that requeue."""


def after_training(rc: int, allocations: int, max_requeues: int) -> str:
    """What the pretraining job does with the trainer's exit status: DONE (0), REQUEUE
    (EXIT_REQUEUE, while fewer than ``max_requeues`` requeues ran: ``allocations`` - 1), else
    JobFailed, so that SLURM marks it failed and ``afterok`` dependents are killed."""
    if rc == 0:
        return DONE
    if rc == EXIT_REQUEUE:
        if max(0, allocations - 1) >= max_requeues:
            raise JobFailed(f"requeue limit {max_requeues} reached before the budget was spent: "
                            "resubmit the same command to continue from the last checkpoint", 1)
        return REQUEUE
    # the trainer printed its one line (a user error, a diverged loss); a status outside 1..255 is a signal
    raise JobFailed(None, rc if isinstance(rc, int) and 0 < rc < 256 else 1)


def _allocations_of_this_job(run_dir: str, job_id: str) -> int:
    """Allocations the ledger recorded for this job (its requeues); a resubmission is a new job and
    starts its own count."""
    ledger = Ledger.load(run_dir)
    return sum(a.job_id in (job_id, f"local-{job_id}") for a in ledger.allocations) if ledger else 0


def end_cancelled(run_dir: str, rank: int) -> None:
    """``submit --cancel`` stopped the trainer (it saved first): the ledger names the cancel and the
    job ends with status 0, so nothing is requeued and the log ends with one line saying so."""
    ledger = Ledger.load(run_dir)
    if rank == 0 and ledger is not None and ledger.allocations:
        ledger.mark_cancelled()
    step = f" at step {ledger.current.step_last}" if ledger is not None and ledger.allocations else ""
    if rank == 0:
        print(f"hpc_bert: stopped by python -m hpc_bert.submit --cancel after saving a checkpoint{step}: "
              "resubmit the same command to continue", file=sys.stderr, flush=True)


class PretrainJob:
    def __init__(self, train_argv: list[str], run_dir: str, max_requeues: int, workdir: str,
                 grace_s: float | None = None):
        self.train_argv = list(train_argv)
        self.run_dir = run_dir
        self.max_requeues = max_requeues
        self.workdir = workdir
        self.grace_s = grace_s  # the partition's preemption GraceTime, when submit could read it

    def __call__(self) -> int:
        os.chdir(self.workdir)
        rank, job_id, local = _export_run_env()
        if self.grace_s:
            os.environ[runenv.GRACE_ENV] = f"{self.grace_s:g}"
        try:
            rc = cli.main(self.train_argv)
        except SystemExit as e:
            if e.code not in (0, 1, 2, EXIT_REQUEUE):
                raise  # submitit's own requeue (a time-limit signal during startup) exits this way
            rc = e.code  # user errors exit through sys.exit(2)
        if rc == EXIT_REQUEUE and cancel_requested(self.run_dir):
            end_cancelled(self.run_dir, rank)
            ignore_late_stop_signals()
            return 0
        try:  # the run dir, not the pickle, says how many allocations ran
            then = after_training(rc, _allocations_of_this_job(self.run_dir, job_id) if rc == EXIT_REQUEUE else 0,
                                  self.max_requeues)
        except JobFailed as failed:
            if failed.line and rank == 0:
                print(f"hpc_bert: error: {failed.line}", file=sys.stderr, flush=True)
            raise FailedExit(failed.status) from None
        if then == REQUEUE:
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
            sys.exit(1)  # failed (so it shows as failed) with that one line last in its log, no traceback
        rc = glue_main(["aggregate", self.run_dir])
        if rc == 0 and read_record(self.run_dir) is not None:
            log_glue_table(self.run_dir, os.path.join(self.run_dir, GLUE_TABLE_CSV))
        return rc
