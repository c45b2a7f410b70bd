"""``python -m hpc_bert.submit``: pretraining with requeues, then GLUE, then the table.

The launcher knows nothing of training. It validates the inputs, then submits
  1. the pretraining job: requeued on timeout / preemption until the ledger says the
     budget is spent (the trainer exits 75 to ask for it);
  2. the GLUE job array, ``afterok`` on (1) with ``--kill-on-invalid-dep=yes``, one task
     per (fine-tune checkpoint x task x learning rate x seed);
  3. one aggregation job, ``afterany`` on (2), that writes the GLUE table.
With ``--cluster local`` the same chain runs on this machine through submitit's
LocalExecutor (which emulates the time limit and requeues), one job after the other.
Flags not listed here are pretraining flags (``--lr 2e-3``) and go to the trainer.
``--slurm_additional`` / ``--setup`` add site options to every job (cluster_options.py); the
chain's job ids go to RUN_DIR/chain.json for ``status``; ``--cancel RUN_DIR`` stops the chain
(cancel.py).
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

from hpc_bert.config.flags import check_choices, field, leaf_fields, parse_config
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import ConfigError, UserError, exit_on_user_error
from hpc_bert.launch import cluster_options
from hpc_bert.launch.disk_room import check_disk_room
from hpc_bert.launch import queue
from hpc_bert.launch.queue import record_chain
from hpc_bert.layout import GLUE_TABLE_MD, SUBMITIT_DIR

LOCAL_MAX_ALLOCATIONS = 6  # submitit's LocalExecutor relaunches a job at most 6 times (its max_retry)
# Seconds of an allocation lost besides the signal lead: SLURM sends the time-limit signal up to
# ~30 s early and a job needs ~60 s to start; a local job starts in ~20 s and is signalled on time.
ALLOCATION_OVERHEAD_S = {"slurm": 90.0, "local": 20.0}
SAVE_BYTES_PER_S = 200e6  # assumed checkpoint write speed until a save was measured
HELP_FLAGS = ("-h", "--help")


@dataclass
class SubmitConfig:
    budget: float = field(0.0, help="training budget in hours (sets --total_training_time)")
    pretrain_config: str = field("configs/pretrain/tiny.yaml", help="pretraining YAML (alias: --config)")
    cluster: str = field("auto", choices=("slurm", "local", "auto"))
    allocation_hours: float = field(4.0, help="time limit of one allocation")
    partition: str | None = field(None)
    account: str | None = field(None)
    qos: str | None = field(None)
    nodes: int = field(1)
    gpus_per_node: int = field(0, help="0 = CPU job; one task per GPU otherwise")
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
        check_choices(self)
        if not (self.budget > 0 and math.isfinite(self.budget)):
            raise ConfigError(f"--budget must be a positive number of hours, got {self.budget}: pass e.g. --budget 24")
        if not self.allocation_hours > 0:
            raise ConfigError(f"--allocation_hours must be > 0, got {self.allocation_hours}")
        for name in ("nodes", "cpus_per_task", "glue_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1")


def signal_delay_seconds(sub: SubmitConfig, cluster: str, save_s: float) -> int:
    """The time-limit signal's lead: room for one checkpoint save (3x the measured or estimated
    save, plus 30 s), but at most a tenth of a short allocation, which must train at all."""
    delay = sub.signal_delay_s or int(max(60 if cluster == "slurm" else 10, 3 * save_s + 30))
    return int(min(delay, sub.allocation_hours * 3600 / 10))


def allocations_needed(budget_hours: float, allocation_hours: float, signal_delay_s: float, cluster: str) -> int:
    """Allocations the budget needs: each loses the signal lead and the cluster's overhead
    (at least a fifth of it is assumed to train)."""
    alloc_s = allocation_hours * 3600
    useful_s = max(0.2 * alloc_s, alloc_s - signal_delay_s - ALLOCATION_OVERHEAD_S[cluster])
    return math.ceil(budget_hours * 3600 / useful_s)


def measured_save_seconds(run_dir: str) -> float | None:
    from hpc_bert.pretrain.events import read_events
    if not os.path.isdir(run_dir):
        return None
    saves = [e.get("seconds", 0) for e in read_events(run_dir) if e["event"] == "checkpoint"]
    return max(saves) if saves else None


def model_parameters(cfg: PretrainConfig) -> int:
    """The model's real parameter count (built on the meta device, with the tokenizer's vocab)."""
    from hpc_bert.data.tokenizer import load_tokenizer
    from hpc_bert.model.bert import model_vocab_size, parameter_count
    vocab_size = cfg.model.vocab_size or model_vocab_size(cfg.model, len(load_tokenizer(cfg.model.tokenizer_name)))
    return parameter_count(cfg.model, vocab_size)


def estimated_save_seconds(cfg: PretrainConfig) -> float:
    """Before any save was measured: one checkpoint of the model's real size written at SAVE_BYTES_PER_S."""
    from hpc_bert.pretrain.checkpoint import checkpoint_bytes
    return checkpoint_bytes(model_parameters(cfg)) / SAVE_BYTES_PER_S


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

    @property
    def folder(self) -> str:
        return os.path.join(self.run_dir, SUBMITIT_DIR)


def plan(argv: list[str]) -> Plan:
    """Parse and check everything; nothing is submitted and nothing is written."""
    mine, train_flags = split_argv(argv)
    sub, _ = parse_config(SubmitConfig, mine, prog="python -m hpc_bert.submit",
                          description="Pretraining with requeues, then the GLUE array, then the table. "
                                      "Flags not listed here are pretraining flags: see python -m hpc_bert.train --help.")
    if not os.path.isfile(sub.pretrain_config):
        raise UserError(f"pretraining config {sub.pretrain_config} does not exist: pass --config FILE.yaml "
                        "(see configs/pretrain/)")
    train_argv = ["--config", sub.pretrain_config, *train_flags, "--total_training_time", str(sub.budget)]
    if sub.run_dir:
        train_argv += ["--output_dir", sub.run_dir]
    cfg, _ = parse_config(PretrainConfig, train_argv, prog="python -m hpc_bert.submit (pretraining flags)")
    run_dir = cfg.checkpoint.output_dir
    from hpc_bert.runlock import check_not_live
    if os.path.isdir(run_dir):
        check_not_live(run_dir)
    if not sub.dry_run and not sub.prepare and (not cfg.data.dataset_path or not os.path.exists(cfg.data.dataset_path)):
        raise UserError(f"--dataset_path {cfg.data.dataset_path} does not exist: prepare shards with "
                        "python -m hpc_bert.data prepare, or fix the path in the config")
    if not sub.dry_run:  # a preview writes nothing, so it needs no room
        check_disk_room(run_dir, model_parameters(cfg), cfg.checkpoint.keep_checkpoints,
                        len(cfg.schedule.finetune_time_markers) + bool(cfg.schedule.finetune_checkpoint_at_end))
    glue_runs, checkpoints = [], []
    if sub.glue:
        from hpc_bert.glue import grid as glue_grid
        grid = glue_grid.load_grid(sub.glue)
        checkpoints = glue_grid.checkpoint_names(cfg.schedule.finetune_time_markers,
                                                 cfg.schedule.finetune_checkpoint_at_end)
        if not checkpoints:
            raise UserError("--glue needs fine-tune checkpoints: set --finetune_time_markers and/or "
                            "--finetune_checkpoint_at_end in the pretraining config")
        glue_runs = glue_grid.expand(grid, glue_grid.resolve_checkpoints(grid, checkpoints, run_dir), run_dir)
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
        limit = queue.partition_limit_hours(sub.partition)
        if limit is not None and sub.allocation_hours > limit:
            raise UserError(f"--allocation_hours {sub.allocation_hours:g} exceeds the partition's time limit "
                            f"({limit:g} h): pass --allocation_hours {limit:g} or less")
        if slurm_options:
            cluster_options.sbatch_test_only(slurm_options, sub.partition, "pretraining")
        if sub.glue and glue_options and glue_options != slurm_options:
            cluster_options.sbatch_test_only(glue_options, sub.partition, "GLUE")
    # The time-limit signal must leave room for one checkpoint save, measured when we can.
    save_s = 0.0 if sub.signal_delay_s else measured_save_seconds(run_dir)
    delay = signal_delay_seconds(sub, cluster, save_s if save_s is not None else estimated_save_seconds(cfg))
    needed = allocations_needed(sub.budget, sub.allocation_hours, delay, cluster)
    if cluster == "local" and needed > LOCAL_MAX_ALLOCATIONS:
        # the smallest allocation that fits: its signal lead is at most a tenth of it
        hours = (sub.budget * 3600 / LOCAL_MAX_ALLOCATIONS + ALLOCATION_OVERHEAD_S["local"]) / 0.9 / 3600
        raise UserError(f"--budget {sub.budget:g} h needs about {needed} allocations of {sub.allocation_hours:g} h, "
                        f"but --cluster local runs at most {LOCAL_MAX_ALLOCATIONS}: pass --allocation_hours "
                        f"{math.ceil(hours * 1000) / 1000:g} or more")
    return Plan(sub, cfg, train_argv, run_dir, cluster, glue_runs, checkpoints, delay,
                needed + sub.requeue_margin, slurm_options, glue_options)


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
    extra = {"requeue": True, **site}
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
    from hpc_bert.launch.jobs import AggregateTask, GlueTask, PretrainJob
    workdir = os.getcwd()
    return (PretrainJob(p.train_argv, p.run_dir, p.max_requeues, workdir),
            GlueTask(p.sub.glue, p.run_dir, p.checkpoints, workdir), AggregateTask(p.run_dir, workdir))


@exit_on_user_error
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--cancel" or a.startswith("--cancel=") for a in argv):
        from hpc_bert.launch.cancel import cancel_chain
        return cancel_chain(argv)
    p = plan(argv)
    print(f"hpc_bert: budget {p.sub.budget:g} h in allocations of {p.sub.allocation_hours:g} h on {p.cluster} "
          f"(up to {p.max_requeues} requeues, signal {p.signal_delay_s} s before the limit); run dir {p.run_dir}"
          + (f"; GLUE: {len(p.glue_runs)} fine-tuning runs over {', '.join(p.checkpoints)}" if p.glue_runs else ""),
          flush=True)
    if p.sub.dry_run:
        return dry_run(p)
    os.makedirs(p.run_dir, exist_ok=True)
    data_job_id = None
    if p.sub.prepare:  # the data jobs first (local: they run now; SLURM: pretraining waits afterok)
        from hpc_bert.data.cluster import prepare_for_submit, submit_prepare
        data_job_id = submit_prepare(prepare_for_submit(p.sub.prepare, p.cluster, p.cfg.data.dataset_path))["summary"]
    if p.cluster == "local":
        return run_local(p)
    return run_slurm(p, data_job_id)


def run_slurm(p: Plan, data_job_id: str | None = None) -> int:
    pretrain, glue, aggregate = _tasks(p)
    pre = pretrain_executor(p, data_job_id).submit(pretrain)
    jobs = {"pretrain": pre.job_id}
    chain = dict(run_dir=p.run_dir, cluster="slurm", jobs=jobs, logs=p.folder, allocation_hours=p.sub.allocation_hours)
    # recorded at once (and after each stage): a chain half submitted is still visible to status and --cancel
    record_chain(**chain, glue_tasks=0)
    print(f"hpc_bert: pretraining job {pre.job_id}", flush=True)
    if p.glue_runs:
        from hpc_bert.glue.grid import rounds
        first, second, origins = rounds(p.glue_runs)
        glue_jobs = glue_executor(p, pre.job_id).map_array(glue, first)
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
        print(f"hpc_bert: GLUE array {array_id} ({len(first)} tasks, afterok:{pre.job_id}); "
              f"aggregation {agg.job_id} (afterany:{arrays})", flush=True)
    print(f"hpc_bert: watch it with: python -m hpc_bert.status {p.run_dir}", flush=True)
    return 0


def dry_run(p: Plan) -> int:
    if p.cluster == "local":
        print("hpc_bert: --cluster local runs jobs on this machine; no scripts to show: "
              "pass --cluster slurm --dry_run to see the sbatch scripts", flush=True)
        return 0
    print("#### pretraining ####")
    print(sbatch_text(pretrain_executor(p)))
    if p.glue_runs:
        from hpc_bert.glue.grid import rounds
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
    from hpc_bert.launch.status import render
    pretrain, glue, aggregate = _tasks(p)
    pre = pretrain_executor(p).submit(pretrain)
    print(f"hpc_bert: pretraining (local job {pre.job_id}); log: {pre.paths.stdout}", flush=True)
    try:
        pre.result()
    except Exception as e:  # submitit re-raises the job's failure
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"pretraining failed ({last}): see {pre.paths.stderr}; GLUE was not started") from None
    print(render(p.run_dir), flush=True)
    if not p.glue_runs:
        return 0
    from hpc_bert.glue.grid import rounds
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


if __name__ == "__main__":
    sys.exit(main())
