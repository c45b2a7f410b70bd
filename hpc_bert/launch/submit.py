"""``python -m hpc_bert.submit``: pretraining with requeues, then GLUE, then the table.

It validates the inputs (nothing is submitted while one is wrong), then submits
  1. the pretraining job: requeued on timeout / preemption until the ledger says the
     budget is spent (the trainer exits 75 to ask for it);
  2. the GLUE job array, ``afterok`` on (1) with ``--kill-on-invalid-dep=yes``, one task
     per (fine-tune checkpoint x task x learning rate x seed);
  3. one aggregation job, ``afterany`` on (2), that writes the GLUE table.
With ``--cluster local`` the same chain runs on this machine through submitit's
LocalExecutor (which emulates the time limit and requeues), one job after the other.
Flags not listed here are pretraining flags (``--lr 2e-3``) and go to the trainer.
Site options: cluster_options.py; job ids: RUN_DIR/chain.json (status); --cancel: cancel.py.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.data.cluster import prepare_for_submit, submit_prepare
from hpc_bert.errors import UserError, exit_on_user_error, gather, raise_all
from hpc_bert.glue import grid as glue_grid
from hpc_bert.glue.grid import rounds
from hpc_bert.launch import cluster_options
from hpc_bert.launch.allocations import allocation_plan, model_parameters
from hpc_bert.launch import queue, resubmit
from hpc_bert.launch.cancel import cancel_chain
from hpc_bert.launch.disk_room import check_disk_room
from hpc_bert.launch.jobs import AggregateTask, GlueTask, PretrainJob
from hpc_bert.launch.queue import BATCH_LOG, record_chain
from hpc_bert.launch.site_defaults import resolve_allocation_hours
from hpc_bert.launch.submit_config import HELP_FLAGS, SubmitConfig, parse_both, split_argv  # noqa: F401  (used by sweep, tests)
from hpc_bert.launch.slurm_limits import partition_max_time
from hpc_bert.launch.status import render
from hpc_bert.layout import GLUE_TABLE_MD, SUBMITIT_DIR
@dataclass
class Plan:
    """Everything checked and decided before anything is submitted or written."""
    sub: SubmitConfig
    cfg: PretrainConfig
    train_argv: list[str]
    run_dir: str
    cluster: str
    glue_runs: list
    checkpoints: list[str]
    signal_delay_s: int
    max_requeues: int
    slurm_options: dict
    glue_slurm_options: dict
    budget_change: str | None = None  # what a new budget does to a run dir that already trained
    allocation_note: str = ""  # where an --allocation_hours auto came from
    grace_s: float | None = None  # the partition's preemption GraceTime, for the trainer

    @property
    def folder(self) -> str:
        return os.path.join(self.run_dir, SUBMITIT_DIR)


def _check_run_dir_and_data(sub: SubmitConfig, cfg: PretrainConfig, problems: list[str]) -> str | None:
    """Returns what a new budget does to a run dir that already trained (None: a fresh run or no change)."""
    change = resubmit.check_run_dir(cfg)  # not in use; a budget change's refusal, in one line
    if not sub.dry_run and not sub.prepare and (not cfg.data.dataset_path or not os.path.exists(cfg.data.dataset_path)):
        problems.append(f"--dataset_path {cfg.data.dataset_path} does not exist: prepare shards with "
                        "python -m hpc_bert.data prepare, or fix the path in the config")
    if not sub.dry_run:  # a preview writes nothing, so it needs no room
        gather(problems, lambda: check_disk_room(
            cfg.checkpoint.output_dir, model_parameters(cfg), cfg.checkpoint.keep_checkpoints,
            len(cfg.schedule.finetune_time_markers) + bool(cfg.schedule.finetune_checkpoint_at_end)))
    return change


def _glue_plan(sub: SubmitConfig, cfg: PretrainConfig) -> tuple[list, list[str]]:
    """(GLUE runs, fine-tune checkpoint names) of --glue; ([], []) without it."""
    if not sub.glue:
        return [], []
    grid = glue_grid.load_grid(sub.glue)
    checkpoints = glue_grid.checkpoint_names(cfg.schedule.finetune_time_markers,
                                             cfg.schedule.finetune_checkpoint_at_end)
    if not checkpoints:
        raise UserError("--glue needs fine-tune checkpoints: set --finetune_time_markers and/or "
                        "--finetune_checkpoint_at_end in the pretraining config")
    run_dir = cfg.checkpoint.output_dir
    return glue_grid.expand(grid, glue_grid.resolve_checkpoints(grid, checkpoints, run_dir), run_dir), checkpoints


def _cluster_plan(sub: SubmitConfig) -> tuple[str, dict, dict]:
    """(cluster, pretraining sbatch options, GLUE sbatch options), checked against the cluster."""
    cluster = sub.cluster
    if cluster == "auto":
        cluster = "slurm" if queue.slurm_available() else "local"
    slurm_options = cluster_options.parse(sub.slurm_additional, "--slurm_additional")
    glue_options = cluster_options.merged(slurm_options, cluster_options.parse(sub.glue_slurm_additional,
                                                                               "--glue_slurm_additional"))
    slurm_options = cluster_options.merged(slurm_options, {})
    cluster_options.check_setup(sub.setup)
    if cluster == "local" and (slurm_options or glue_options or sub.setup):
        raise UserError("--slurm_additional / --glue_slurm_additional / --setup are sbatch options: pass "
                        "--cluster slurm, or drop them for --cluster local (run setup commands before submit)")
    if cluster == "slurm" and not sub.dry_run:
        if not queue.slurm_available():
            raise UserError("--cluster slurm but no SLURM controller answers (sinfo failed): run on a login node, "
                            "or pass --cluster local")
        _, limit = partition_max_time(sub.partition)
        if limit is not None and sub.allocation_hours > limit:
            raise UserError(f"--allocation_hours {sub.allocation_hours:g} exceeds the partition's time limit "
                            f"({limit:g} h): pass --allocation_hours {limit:g} or less")
        if slurm_options:
            cluster_options.sbatch_test_only(slurm_options, sub.partition, "pretraining")
        if sub.glue and glue_options and glue_options != slurm_options:
            cluster_options.sbatch_test_only(glue_options, sub.partition, "GLUE")
    return cluster, slurm_options, glue_options


def plan(argv: list[str]) -> Plan:
    """Parse and check everything; nothing is submitted and nothing is written."""
    sub, cfg, train_argv = parse_both(argv)
    problems: list[str] = []
    change = _check_run_dir_and_data(sub, cfg, problems)
    glue_runs, checkpoints = gather(problems, lambda: _glue_plan(sub, cfg)) or ([], [])
    raise_all(problems)
    note = resolve_allocation_hours(sub)
    cluster, slurm_options, glue_options = _cluster_plan(sub)
    delay, needed, grace_s = allocation_plan(sub, cfg, cluster)
    return Plan(sub, cfg, train_argv, cfg.checkpoint.output_dir, cluster, glue_runs, checkpoints, delay,
                needed + sub.requeue_margin, slurm_options, glue_options, change, note, grace_s)


# ---- the executor chain: pretraining -> GLUE array (afterok) -> aggregation (afterany) ----

def _executor(p: Plan, name: str, hours: float, nodes: int, tasks: int, gpus: int, after: str | None):
    """One stage's executor. ``after``: SLURM dependency (None: none, and always on local)."""
    import submitit
    minutes = max(1, int(round(hours * 60)))
    if p.cluster == "local":
        ex = submitit.LocalExecutor(folder=p.folder, max_num_timeout=p.max_requeues)
        ex.update_parameters(timeout_min=minutes, tasks_per_node=tasks, signal_delay_s=p.signal_delay_s)
        return ex
    sub = p.sub
    executor_cls = submitit.SlurmExecutor
    if sub.dry_run:  # submitit refuses to build one where srun is missing; printing scripts needs no srun
        executor_cls = type("ScriptOnlySlurmExecutor", (executor_cls,), {"affinity": classmethod(lambda cls: 1)})
    ex = executor_cls(folder=p.folder, max_num_timeout=p.max_requeues)
    site = {"hpc_bert_pretrain": p.slurm_options, "hpc_bert_glue": p.glue_slurm_options}.get(
        name, cluster_options.without_gpus(p.glue_slurm_options))
    # the batch shell's own messages (srun's "task 0: Exited with exit code 2") go to a file of their
    # own, so the job's log (rank 0's) ends with the line that says what happened
    extra = {"requeue": True, "error": os.path.join(os.path.abspath(p.folder), BATCH_LOG), **site}
    if after:
        extra.update({"dependency": after, "kill-on-invalid-dep": "yes"})
    params = dict(job_name=name, time=minutes, nodes=nodes, ntasks_per_node=tasks, cpus_per_task=sub.cpus_per_task,
                  signal_delay_s=p.signal_delay_s, additional_parameters=extra)
    if sub.setup:
        params["setup"] = list(sub.setup)
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos"):
        if getattr(sub, key):
            params[key] = getattr(sub, key)
    if sub.mem_gb:
        params["mem"] = f"{sub.mem_gb}G"
    ex.update_parameters(**params)
    return ex


def pretrain_executor(p: Plan, data_job_id: str | None = None):
    tasks = max(1, p.sub.gpus_per_node)
    return _executor(p, "hpc_bert_pretrain", p.sub.allocation_hours, p.sub.nodes, tasks, p.sub.gpus_per_node,
                     data_job_id and f"afterok:{data_job_id}")


def glue_executor(p: Plan, pretrain_job_id: str | None):
    ex = _executor(p, "hpc_bert_glue", p.sub.glue_allocation_hours, 1, 1, min(1, p.sub.gpus_per_node),
                   pretrain_job_id and f"afterok:{pretrain_job_id}")
    if p.cluster != "local":
        ex.update_parameters(array_parallelism=p.sub.glue_parallelism)
    return ex


def aggregate_executor(p: Plan, glue_array_id: str | None):
    return _executor(p, "hpc_bert_aggregate", 0.25, 1, 1, 0, glue_array_id and f"afterany:{glue_array_id}")


def sbatch_text(executor, array_size: int | None = None) -> str:
    """The sbatch script submitit would submit. submitit has no public call for it, so this is
    the one place that uses its private ``_make_submission_file_text`` and ``_submitit_command_str``
    (tests/test_submit.py::test_submitit_private_api_still_there fails loudly when they change)."""
    if array_size is not None:
        executor.parameters["map_count"] = array_size  # what submitit's map_array sets
    return executor._make_submission_file_text(executor._submitit_command_str, "%j")


def _tasks(p: Plan):
    workdir = os.getcwd()
    return (PretrainJob(p.train_argv, p.run_dir, p.max_requeues, workdir, p.grace_s),
            GlueTask(p.sub.glue, p.run_dir, p.checkpoints, workdir), AggregateTask(p.run_dir, workdir))


@exit_on_user_error
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--cancel" or a.startswith("--cancel=") for a in argv):
        return cancel_chain(argv)
    argv = resubmit.with_saved_args(argv)  # --run_dir R --budget H: the chain's saved flags, H winning
    p = plan(argv)
    if p.budget_change and not p.sub.dry_run and resubmit.stop_running_chain(p.run_dir):
        p = plan(argv)  # decided again from the checkpoint the stopped trainer saved
    print(f"hpc_bert: budget {p.sub.budget:g} h in allocations of {p.sub.allocation_hours:g} h"
          + (f" ({p.allocation_note})" if p.allocation_note else "") + f" on {p.cluster} "
          f"(up to {p.max_requeues} requeues, signal {p.signal_delay_s} s before the limit); run dir {p.run_dir}; "
          f"{p.cfg.model.num_hidden_layers}-layer model from {p.sub.pretrain_config}"
          + (f", {p.sub.gpus_per_node} GPUs per node" if p.sub.gpus_per_node else ", CPU only")
          + (f"; GLUE: {len(p.glue_runs)} fine-tuning runs over {', '.join(p.checkpoints)}" if p.glue_runs else "")
          + (f"\nhpc_bert: {p.budget_change}" if p.budget_change else ""), flush=True)
    if p.sub.dry_run:
        return dry_run(p)
    os.makedirs(p.run_dir, exist_ok=True)
    resubmit.save_args(p.run_dir, argv)
    data_job_id = None
    if p.sub.prepare:  # the data jobs first (local: they run now; SLURM: pretraining waits afterok)
        data_job_id = submit_prepare(prepare_for_submit(p.sub.prepare, p.cluster, p.cfg.data.dataset_path))["summary"]
    if p.cluster == "local":
        return run_local(p)
    return run_slurm(p, data_job_id)


def run_slurm(p: Plan, data_job_id: str | None = None) -> int:
    pre = pretrain_executor(p, data_job_id).submit(_tasks(p)[0])
    chain = dict(run_dir=p.run_dir, cluster="slurm", jobs={"pretrain": pre.job_id}, logs=p.folder,
                 allocation_hours=p.sub.allocation_hours)
    record_chain(**chain, glue_tasks=0)  # at once, and after each stage: status / --cancel see a half chain
    print(f"hpc_bert: pretraining job {pre.job_id}", flush=True)
    submit_glue_stages(p, pre.job_id, chain)
    print(f"hpc_bert: watch it with: python -m hpc_bert.status {p.run_dir}", flush=True)
    return 0


def submit_glue_stages(p: Plan, pretrain_job_id: str, chain: dict) -> str | None:
    """GLUE array(s) afterok on the pretraining job (or array task ``A_i``), then the aggregation;
    each recorded in ``chain`` as submitted. Returns the aggregation's job id (None: no GLUE)."""
    if not p.glue_runs:
        return None
    (_, glue, aggregate), jobs = _tasks(p), chain["jobs"]
    first, second, origins = rounds(p.glue_runs)
    glue_jobs = glue_executor(p, pretrain_job_id).map_array(glue, first)
    array_id = arrays = jobs["glue_array"] = glue_jobs[0].job_id.split("_")[0]
    record_chain(**chain, glue_tasks=len(first))
    if second:  # start_from: round two waits for the array tasks whose models it starts from
        after = ":".join(glue_jobs[first.index(i)].job_id for i in origins)
        second_id = jobs["glue_round2"] = glue_executor(p, after).map_array(glue, second)[0].job_id.split("_")[0]
        arrays = f"{array_id}:{second_id}"
        record_chain(**chain, glue_tasks=len(first), glue_round2_tasks=len(second))
        print(f"hpc_bert: GLUE second round: array {second_id} ({len(second)} tasks, afterok:{after})", flush=True)
    agg = aggregate_executor(p, arrays).submit(aggregate)
    jobs["aggregate"] = agg.job_id
    record_chain(**chain, glue_tasks=len(first), glue_round2_tasks=len(second))
    print(f"hpc_bert: GLUE array {array_id} ({len(first)} tasks, afterok:{pretrain_job_id}); "
          f"aggregation {agg.job_id} (afterany:{arrays})", flush=True)
    return agg.job_id


def dry_run(p: Plan) -> int:
    if p.cluster == "local":
        print("hpc_bert: --cluster local runs jobs on this machine; no scripts to show: "
              "pass --cluster slurm --dry_run to see the sbatch scripts", flush=True)
        return 0
    print("#### pretraining ####")
    print(sbatch_text(pretrain_executor(p)))
    if p.glue_runs:
        first, second, _ = rounds(p.glue_runs)
        print(f"#### GLUE array: {len(first)} tasks ####")
        print(sbatch_text(glue_executor(p, "<pretrain_job_id>"), array_size=len(first)))
        if second:
            print(f"#### GLUE second round: {len(second)} tasks ####")
            print(sbatch_text(glue_executor(p, "<first-round task ids it starts from>"), array_size=len(second)))
        print("#### aggregation ####")
        print(sbatch_text(aggregate_executor(p, "<glue_array_id>")))
    return 0


def run_local(p: Plan) -> int:
    """The same chain on this machine: each stage waits for the one before (afterok / afterany)."""
    pretrain, glue, aggregate = _tasks(p)
    pre = pretrain_executor(p).submit(pretrain)
    print(f"hpc_bert: pretraining (local job {pre.job_id}); log: {pre.paths.stdout}", flush=True)
    try:
        pre.result()
    except Exception as e:  # submitit re-raises the job's failure; the job's log holds its one line
        last = queue.error_line(str(pre.paths.stderr)) or (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise UserError(f"pretraining failed ({last}): see {pre.paths.stderr}; GLUE was not started") from None
    print(render(p.run_dir), flush=True)
    if not p.glue_runs:
        return 0
    first, second, _ = rounds(p.glue_runs)
    glue_ex = glue_executor(p, None)
    for i in first + second:  # round two after the runs it starts from
        j = glue_ex.submit(glue, i)
        try:
            j.result()
        except Exception:  # afterany: the table reports what finished
            print(f"hpc_bert: GLUE run {i} failed; see {j.paths.stderr}", flush=True)
    aggregate_executor(p, None).submit(aggregate).result()
    table = os.path.join(p.run_dir, GLUE_TABLE_MD)
    if os.path.exists(table):
        print(open(table).read(), flush=True)
    return 0

