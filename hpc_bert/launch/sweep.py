"""``python -m hpc_bert.sweep``: many budgeted pretraining runs as one job array, one leaderboard.

    python -m hpc_bert.sweep --budget 24 --grid configs/sweep/paper-lr-batch.yaml --sweep_dir runs/lr-batch

Every member is planned by ``submit`` itself (its checks, its executors, its GLUE stages), so
every submit flag applies to every member. On SLURM:
  1. one pretraining job array, task i = member i, each with its own run dir SWEEP_DIR/NAME
     (ledger, checkpoints, markers, W&B run); a preempted or timed-out task requeues itself
     alone (``scontrol requeue A_i``) until its own ledger says its budget is spent;
  2. per member, its GLUE array ``afterok:A_i`` (so early finishers are scored while others
     train; a failed member's array is killed by --kill-on-invalid-dep) and its aggregation;
  3. the leaderboard job, ``afterany`` on every aggregation: SWEEP_DIR/sweep_results.md / .csv.
``--cluster local`` runs the members one after another. Resubmitting the same command continues:
finished members are skipped, failed ones too unless ``--retry_failed``.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from hpc_bert.atomic import write_json_atomic
from hpc_bert.config.flags import field, parse_config
from hpc_bert.errors import UserError, exit_on_user_error
from hpc_bert.glue.grid import rounds
from hpc_bert.launch import leaderboard, submit
from hpc_bert.launch.cancel import cancel_requested
from hpc_bert.launch.jobs import FailedExit, PretrainJob
from hpc_bert.launch.queue import error_line, record_chain
from hpc_bert.launch.sweep_cancel import cancel_sweep
from hpc_bert.launch.sweep_grid import Grid, load, member_table
from hpc_bert.layout import MEMBER_FAILED, SWEEP_FILE

PROG = "python -m hpc_bert.sweep"


@dataclass
class SweepConfig:
    grid: str = field("", help="sweep grid YAML (configs/sweep/*.yaml): base: and axes: or members:")
    sweep_dir: str = field("", help="one run dir per member under it, and the leaderboard")
    array_parallelism: int = field(0, help="members training at once (0 = all)")
    retry_failed: bool = field(False, help="on resubmission, rerun members whose pretraining failed")
    cancel: str | None = field(None, help="SWEEP_DIR: each running member saves, then every job is cancelled")

    def __post_init__(self):
        if self.array_parallelism < 0:
            raise UserError(f"--array_parallelism must be >= 0 (0 = all members at once), got {self.array_parallelism}")


OWN_FLAGS = {f"--{f.name}" for f in dataclasses.fields(SweepConfig)} | {"--no_retry_failed"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """The sweep's own flags, and the rest (submit's flags and pretraining flags, for every member)."""
    mine, rest, i = [], [], 0
    while i < len(argv):
        flag = argv[i].split("=")[0]
        target = mine if flag in OWN_FLAGS or flag in submit.HELP_FLAGS else rest
        target.append(argv[i])
        if "=" not in argv[i] and i + 1 < len(argv) and not argv[i + 1].startswith("--") \
                and flag not in submit.HELP_FLAGS:
            target.append(argv[i + 1])
            i += 1
        i += 1
    return mine, rest


@dataclass
class SweepPlan:
    sweep: SweepConfig
    grid: Grid
    plans: dict  # member name -> submit.Plan
    array: submit.Plan  # the pretraining array's executor settings; its folder is SWEEP_DIR/submitit

    @property
    def first(self) -> submit.Plan:
        return next(iter(self.plans.values()))


def _member_argv(sw: SweepConfig, grid: Grid, rest: list[str], member) -> list[str]:
    return [*rest, "--config", grid.base, *member.flags(), "--run_dir", os.path.join(sw.sweep_dir, member.name)]


def _check_shared_flags(rest: list[str], grid: Grid) -> None:
    for a in rest:
        name = a.split("=")[0].lstrip("-")
        if name == "prepare":
            raise UserError("--prepare is not for sweeps: prepare the shards once with python -m hpc_bert.data "
                            "prepare (or one submit --prepare), then sweep")
        if name in ("config", "pretrain_config", "run_dir", "output_dir"):
            raise UserError(f"--{name} is set by the sweep (the grid's base:, SWEEP_DIR/MEMBER): drop it")
        # a flag some members set is their default for the others; one every member sets is a mistake
        if all(name in m.values for m in grid.members):
            raise UserError(f"--{name} is an axis of the grid {grid.path}: drop the flag, or the axis")


def plan(argv: list[str]) -> SweepPlan:
    """Parse and check everything, each member by submit's own plan; nothing is written."""
    mine, rest = split_argv(argv)
    sw, _ = parse_config(SweepConfig, mine, prog=PROG, description=__doc__.split("\n\n")[0] +
                         " Flags not listed here are submit's (python -m hpc_bert.submit --help) and pretraining "
                         "flags; they apply to every member.")
    if not sw.grid or not sw.sweep_dir:
        raise UserError("a sweep needs --grid FILE.yaml and --sweep_dir DIR: e.g. --grid "
                        "configs/sweep/paper-lr-batch.yaml --sweep_dir runs/lr-batch")
    grid = load(sw.grid)
    _check_shared_flags(rest, grid)
    record = leaderboard.read_sweep(sw.sweep_dir)
    if record is not None and record["identity"] != grid.identity():
        raise UserError(f"{sw.sweep_dir} holds a different sweep (grid {record['grid']}, "
                        f"{len(record['members'])} members): pass a new --sweep_dir, or that sweep's grid")
    # shared flags first, unprefixed: an error there is no member's fault
    submit.plan(rest + ["--config", grid.base, "--run_dir", os.path.join(sw.sweep_dir, grid.members[0].name)])
    plans = {}
    for i, member in enumerate(grid.members):
        try:
            plans[member.name] = submit.plan(_member_argv(sw, grid, rest, member))
        except UserError as e:
            raise UserError(f"member {i} {member.name} ({member.describe()}): {e}") from None
    plans_ = list(plans.values())
    array = dataclasses.replace(plans_[0], run_dir=sw.sweep_dir,  # one --signal and requeue limit for the array
                                signal_delay_s=max(p.signal_delay_s for p in plans_),
                                max_requeues=max(p.max_requeues for p in plans_))
    return SweepPlan(sw, grid, plans, array)


def _seq_len(dataset_path: str | None) -> int | None:
    """The shards' sequence length (for tokens seen), when the shards are HDF5 and readable."""
    if not dataset_path or not os.path.isdir(dataset_path):
        return None
    shards = sorted(f for f in os.listdir(dataset_path) if f.endswith((".hdf5", ".h5")))
    try:
        import h5py  # the data pipeline's reader; only to read one shape
        with h5py.File(os.path.join(dataset_path, shards[0]), "r") as f:
            return int(f["input_ids"].shape[1])
    except Exception:  # no shard, another layout: tokens stay unknown
        return None


def write_record(sp: SweepPlan, submissions: list[dict]) -> dict:
    sw, grid = sp.sweep, sp.grid
    members = [{"name": m.name, "values": m.values, "run_dir": sp.plans[m.name].run_dir,
                "batch": sp.plans[m.name].cfg.optim.train_batch_size,
                "seq_len": _seq_len(sp.plans[m.name].cfg.data.dataset_path)} for m in grid.members]
    record = {"sweep_dir": sw.sweep_dir, "grid": grid.path, "base": grid.base, "budget": sp.first.sub.budget,
              "axes": grid.axes, "identity": grid.identity(), "cluster": sp.array.cluster, "members": members,
              "submissions": submissions}
    os.makedirs(sw.sweep_dir, exist_ok=True)
    write_json_atomic(os.path.join(sw.sweep_dir, SWEEP_FILE), record)
    return record


def to_run(sp: SweepPlan) -> tuple[list[str], dict[str, str]]:
    """The members this submission trains, and every member's state now. A member still in the
    queue stops the resubmission (two jobs would train one run dir)."""
    states = {m.name: leaderboard.member_state(sp.plans[m.name].run_dir)[0] for m in sp.grid.members}
    live = [n for n, s in states.items() if s in ("running", "pending")]
    if live:
        raise UserError(f"member {live[0]} of {sp.sweep.sweep_dir} is still {states[live[0]]}: wait for it, or "
                        f"stop the sweep with {PROG} --cancel {sp.sweep.sweep_dir}")
    skip = {"done"} | (set() if sp.sweep.retry_failed else {"failed"})
    return [n for n, s in states.items() if s not in skip], states


class MemberPretrainTask:
    """Array task i runs member i's pretraining job; a failure is written into the member's run dir
    (the leaderboard shows it; a resubmission skips the member unless --retry_failed)."""

    def __call__(self, job: PretrainJob) -> int:
        try:
            return job()
        except (Exception, FailedExit) as e:  # a requeue exits otherwise, and is no failure
            if not cancel_requested(job.run_dir):
                leaderboard.mark_failed(job.run_dir, _error_line(e))
            raise

    def checkpoint(self, job: PretrainJob):
        """A time-limit signal before the trainer started: requeue unchanged (the state is in the run dir)."""
        import submitit
        return submitit.helpers.DelayedSubmission(self, job)


def _error_line(e: Exception) -> str:
    """Why the member failed: the trainer's one-line error in this task's log, else the exception."""
    import submitit
    sys.stderr.flush()
    try:
        line = error_line(str(submitit.JobEnvironment().paths.stderr))
    except RuntimeError:  # not inside a submitit job
        line = None
    return line or f"{type(e).__name__}: {e}"


def pretrain_array_executor(sp: SweepPlan, count: int):
    ex = submit.pretrain_executor(sp.array)
    ex.update_parameters(array_parallelism=sp.sweep.array_parallelism or count)
    return ex


def leaderboard_executor(sp: SweepPlan, after: str | None):
    ex = submit.aggregate_executor(sp.array, after)
    if sp.array.cluster != "local":
        ex.update_parameters(job_name="hpc_bert_leaderboard")
    return ex


def run_slurm(sp: SweepPlan, names: list[str]) -> int:
    """Submit the array, each member's GLUE stages, the leaderboard. Should sbatch refuse one job
    midway, the jobs already submitted are cancelled: a sweep is submitted whole or not at all."""
    submitted: list[str] = []
    try:
        _submit_all(sp, names, submitted)
    except Exception as e:  # sbatch's refusal arrives as submitit's FailedJobError
        if submitted:
            subprocess.run(["scancel", *submitted], capture_output=True, timeout=60)
        why = " ".join(str(e).split())[-300:]
        raise UserError(f"sbatch refused a job of the sweep ({why}); the {len(submitted)} jobs already submitted "
                        "were cancelled: fix the cause and run the same command again") from None
    return 0


def _submit_all(sp: SweepPlan, names: list[str], submitted: list[str]) -> None:
    record = leaderboard.read_sweep(sp.sweep.sweep_dir)
    workdir = os.getcwd()
    pretrain_jobs = [PretrainJob(sp.plans[n].train_argv, sp.plans[n].run_dir, sp.plans[n].max_requeues, workdir)
                     for n in names]
    array = pretrain_array_executor(sp, len(names)).map_array(MemberPretrainTask(), pretrain_jobs)
    array_id = array[0].job_id.split("_")[0]
    submitted.append(array_id)
    submission = {"submitted": time.time(), "array": array_id, "tasks": {n: i for i, n in enumerate(names)},
                  "aggregations": {}, "leaderboard": None}
    record["submissions"].append(submission)
    write_record(sp, record["submissions"])
    print(f"hpc_bert: pretraining array {array_id}: {len(names)} members "
          f"({', '.join(f'{i}={n}' for i, n in enumerate(names))})", flush=True)
    for i, name in enumerate(names):
        p = sp.plans[name]
        chain = dict(run_dir=p.run_dir, cluster="slurm", jobs={"pretrain": array[i].job_id}, logs=sp.array.folder,
                     allocation_hours=p.sub.allocation_hours)
        record_chain(**chain, glue_tasks=0)
        try:
            agg = submit.submit_glue_stages(p, array[i].job_id, chain)
        finally:
            submitted += [j for role, j in chain["jobs"].items() if role != "pretrain"]
        if agg:
            submission["aggregations"][name] = agg
        write_record(sp, record["submissions"])
    aggs = list(submission["aggregations"].values())
    after = ":".join(aggs) if aggs else array_id  # the executor writes afterany:<after>
    submission["leaderboard"] = leaderboard_executor(sp, after).submit(
        leaderboard.LeaderboardTask(sp.sweep.sweep_dir, workdir)).job_id
    write_record(sp, record["submissions"])
    print(f"hpc_bert: leaderboard job {submission['leaderboard']} (afterany:{after}); watch it with: "
          f"python -m hpc_bert.status {sp.sweep.sweep_dir}", flush=True)


def run_local(sp: SweepPlan, names: list[str]) -> int:
    """The members one after another on this machine, each with submit's local chain."""
    record = leaderboard.read_sweep(sp.sweep.sweep_dir)
    record["submissions"].append({"submitted": time.time(), "tasks": {n: i for i, n in enumerate(names)}})
    write_record(sp, record["submissions"])
    for i, name in enumerate(names):
        print(f"hpc_bert: member {i + 1}/{len(names)}: {name}", flush=True)
        p = sp.plans[name]
        os.makedirs(p.run_dir, exist_ok=True)
        try:
            submit.run_local(p)
        except UserError as e:  # this member failed; the others go on
            leaderboard.mark_failed(p.run_dir, str(e))
            print(f"hpc_bert: member {name} failed: {e}", flush=True)
    print(leaderboard.write(sp.sweep.sweep_dir), flush=True)
    return 0


def dry_run(sp: SweepPlan, names: list[str]) -> int:
    if sp.array.cluster == "local":
        print("hpc_bert: --cluster local runs the members one after another on this machine; no scripts to "
              "show: pass --cluster slurm --dry_run to see the sbatch scripts", flush=True)
        return 0
    first = sp.plans[names[0]]
    print(f"#### pretraining array: {len(names)} member{'s' * (len(names) != 1)}, task i = member i ####")
    print(submit.sbatch_text(pretrain_array_executor(sp, len(names)), array_size=len(names)))
    if first.glue_runs:
        count = len(rounds(first.glue_runs)[0])
        print(f"#### GLUE array of member 0 ({names[0]}): {count} tasks; every member has its own, "
              "in its run dir, afterok on its own array task ####")
        print(submit.sbatch_text(submit.glue_executor(first, "<pretrain_array_id>_0"), array_size=count))
        print(f"#### aggregation of member 0 ({names[0]}) ####")
        print(submit.sbatch_text(submit.aggregate_executor(first, "<glue_array_id>")))
    print("#### leaderboard ####")
    after = "<aggregation ids of every member>" if first.glue_runs else "<pretrain_array_id>"
    print(submit.sbatch_text(leaderboard_executor(sp, after)))
    return 0


@exit_on_user_error
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--cancel" or a.startswith("--cancel=") for a in argv):
        return cancel_sweep(argv)
    sp = plan(argv)
    names, states = to_run(sp) if os.path.isdir(sp.sweep.sweep_dir) else ([m.name for m in sp.grid.members], {})
    p = sp.first
    print(f"hpc_bert: sweep of {len(sp.grid.members)} members, budget {p.sub.budget:g} h each in allocations of "
          f"{p.sub.allocation_hours:g} h on {sp.array.cluster}; sweep dir {sp.sweep.sweep_dir}", flush=True)
    run_dirs = {n: q.run_dir for n, q in sp.plans.items()}
    print(member_table(sp.grid, run_dirs, states or None), flush=True)
    skipped = [n for n in run_dirs if n not in names]
    if skipped:
        print(f"hpc_bert: not rerun: {', '.join(f'{n} ({states[n]})' for n in skipped)}"
              + ("; pass --retry_failed to rerun failed members" if any(states[n] == "failed" for n in skipped)
                 else ""), flush=True)
    if p.sub.dry_run:
        return dry_run(sp, names or list(run_dirs))
    if not names:
        print(leaderboard.write(sp.sweep.sweep_dir) if leaderboard.read_sweep(sp.sweep.sweep_dir) else
              "hpc_bert: nothing to run", flush=True)
        return 0
    record = leaderboard.read_sweep(sp.sweep.sweep_dir)
    write_record(sp, record["submissions"] if record else [])
    for n in names:  # a retried member starts over its failure record (its checkpoints stay)
        if leaderboard.failure(sp.plans[n].run_dir):
            os.remove(os.path.join(sp.plans[n].run_dir, MEMBER_FAILED))
    return run_local(sp, names) if sp.array.cluster == "local" else run_slurm(sp, names)


if __name__ == "__main__":
    sys.exit(main())
