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
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from hpc_bert.config.flags import field, check_choice, leaf_fields, parse_config
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import ConfigError, UserError, exit_on_user_error

SUBMITIT_DIR = "submitit"
LOCAL_MAX_ALLOCATIONS = 6


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

    def __post_init__(self):
        if not (self.budget > 0 and math.isfinite(self.budget)):
            raise ConfigError(f"--budget must be a positive number of hours, got {self.budget}: pass e.g. --budget 24")
        if not self.allocation_hours > 0:
            raise ConfigError(f"--allocation_hours must be > 0, got {self.allocation_hours}")
        check_choice("cluster", self.cluster, ("slurm", "local", "auto"))
        for name in ("nodes", "cpus_per_task", "glue_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1")

    @property
    def max_requeues(self) -> int:
        """Allocations the budget needs, counting what each loses to startup, the signal lead
        and SLURM's ~30 s signal jitter, plus a margin for preemptions and crashes."""
        alloc_s = self.allocation_hours * 3600
        useful_s = max(0.2 * alloc_s, alloc_s - (self.signal_delay_s or 90) - 30 - 60)
        return math.ceil(self.budget * 3600 / useful_s) + self.requeue_margin


def slurm_available() -> bool:
    if not shutil.which("sbatch"):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def partition_limit_hours(partition: str | None) -> float | None:
    """The partition's MaxTime in hours (None: unlimited or unknown)."""
    cmd = ["sinfo", "-h", "-o", "%l"] + (["-p", partition] if partition else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.split()
    if not out or out[0] in ("infinite", "n/a"):
        return None
    days, _, hms = out[0].rpartition("-")
    parts = [int(x) for x in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 24 + parts[0] + parts[1] / 60 + parts[2] / 3600


def measured_save_seconds(run_dir: str) -> float | None:
    from hpc_bert.pretrain.events import read_events
    saves = [e.get("seconds", 0) for e in read_events(run_dir) if e["event"] == "checkpoint"]
    return max(saves) if saves else None


def estimated_save_seconds(cfg) -> float:
    """Before any save was measured: weights + two Adam moments in fp32 at ~200 MB/s."""
    m = cfg.model
    params = 12 * m.num_hidden_layers * m.hidden_size ** 2 + 30522 * m.hidden_size
    return params * 12 / 200e6


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate submit's own flags from pretraining flags (which go to the trainer)."""
    own = {f"--{n}" for n in leaf_fields(SubmitConfig)} | {f"--no_{n}" for n in leaf_fields(SubmitConfig)}
    own |= {"--config"}
    mine, train = [], []
    i = 0
    while i < len(argv):
        flag = argv[i].split("=")[0]
        target = mine if flag in own else train
        target.append(argv[i])
        # --prepare's value is itself a list of flags ("--input corpus/ ...")
        if "=" not in argv[i] and i + 1 < len(argv) and (not argv[i + 1].startswith("--") or flag == "--prepare"):
            target.append(argv[i + 1])
            i += 1
        i += 1
    return [("--pretrain_config" if a == "--config" else a) for a in mine], train


def plan(argv: list[str]):
    """Parse and check everything; nothing is submitted and nothing is written."""
    mine, train_flags = split_argv(argv)
    sub, _ = parse_config(SubmitConfig, mine, prog="python -m hpc_bert.submit")
    if not os.path.isfile(sub.pretrain_config):
        raise UserError(f"pretraining config {sub.pretrain_config} does not exist: pass --config FILE.yaml "
                        "(see configs/pretrain/)")
    train_argv = ["--config", sub.pretrain_config, *train_flags, "--total_training_time", str(sub.budget)]
    if sub.run_dir:
        train_argv += ["--output_dir", sub.run_dir]
    cfg, _ = parse_config(PretrainConfig, train_argv, prog="python -m hpc_bert.submit (pretraining flags)")
    run_dir = cfg.checkpoint.output_dir
    from hpc_bert.launch.runlock import check_not_live
    if os.path.isdir(run_dir):
        check_not_live(run_dir)
    if not sub.dry_run and not sub.prepare and (not cfg.data.dataset_path or not os.path.exists(cfg.data.dataset_path)):
        raise UserError(f"--dataset_path {cfg.data.dataset_path} does not exist: prepare shards with "
                        "python -m hpc_bert.data prepare, or fix the path in the config")
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
        cluster = "slurm" if slurm_available() else "local"
    if cluster == "local":
        # submitit's LocalExecutor relaunches a job at most 6 times (its max_retry).
        alloc_s = sub.allocation_hours * 3600
        needed = math.ceil(sub.budget * 3600 / max(0.2 * alloc_s, alloc_s - 25))
        if needed > LOCAL_MAX_ALLOCATIONS:
            raise UserError(f"--budget {sub.budget:g} h needs about {needed} allocations of {sub.allocation_hours:g} h, "
                            f"but --cluster local runs at most {LOCAL_MAX_ALLOCATIONS}: pass --allocation_hours "
                            f"{sub.budget / (LOCAL_MAX_ALLOCATIONS - 2) + 25 / 3600:.3g} or more")
    if cluster == "slurm" and not sub.dry_run:
        if not slurm_available():
            raise UserError("--cluster slurm but no SLURM controller answers (sinfo failed): run on a login node, "
                            "or pass --cluster local")
        limit = partition_limit_hours(sub.partition)
        if limit is not None and sub.allocation_hours > limit:
            raise UserError(f"--allocation_hours {sub.allocation_hours:g} exceeds the partition's time limit "
                            f"({limit:g} h): pass --allocation_hours {limit:g} or less")
    return sub, cfg, train_argv, run_dir, cluster, glue_runs, checkpoints


def make_executor(sub: SubmitConfig, cluster: str, folder: str, name: str, hours: float, tasks: int,
                  signal_delay_s: int, extra: dict | None = None):
    import submitit
    minutes = max(1, int(round(hours * 60)))
    if cluster == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=sub.max_requeues)
        ex.update_parameters(timeout_min=minutes, tasks_per_node=tasks, signal_delay_s=signal_delay_s)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=sub.max_requeues)
    params = dict(job_name=name, time=minutes, nodes=sub.nodes if name == "hpc_bert_pretrain" else 1,
                  ntasks_per_node=tasks, cpus_per_task=sub.cpus_per_task, signal_delay_s=signal_delay_s,
                  additional_parameters={"requeue": True, **(extra or {})})
    if sub.gpus_per_node and name != "hpc_bert_aggregate":
        params["gpus_per_node"] = sub.gpus_per_node if name == "hpc_bert_pretrain" else 1
    for key in ("partition", "account", "qos"):
        if getattr(sub, key):
            params[key] = getattr(sub, key)
    if sub.mem_gb:
        params["mem"] = f"{sub.mem_gb}G"
    ex.update_parameters(**params)
    return ex


def sbatch_text(executor, array: int | None = None) -> str:
    if array is not None:
        executor.update_parameters(array_parallelism=executor.parameters.get("array_parallelism", 256))
        executor.parameters["map_count"] = array
    return executor._make_submission_file_text(executor._submitit_command_str, "%j")


@exit_on_user_error
def main(argv=None) -> int:
    from hpc_bert.launch.jobs import AggregateTask, GlueTask, PretrainJob
    argv = list(sys.argv[1:] if argv is None else argv)
    sub, cfg, train_argv, run_dir, cluster, glue_runs, checkpoints = plan(argv)
    workdir = os.getcwd()
    folder = os.path.join(run_dir, SUBMITIT_DIR)
    saved = measured_save_seconds(run_dir) if os.path.isdir(run_dir) else None
    # The time-limit signal must leave room for one checkpoint save, measured when we can.
    save_s = saved if saved is not None else estimated_save_seconds(cfg)
    delay = sub.signal_delay_s or int(max(60 if cluster == "slurm" else 10, 3 * save_s + 30))
    # ...but a short allocation must not be signalled before it could train at all.
    delay = int(min(delay, sub.allocation_hours * 3600 / 10))
    tasks = max(1, sub.gpus_per_node)
    after_data = None
    if sub.prepare and not sub.dry_run:
        from hpc_bert.data.cluster import prepare_for_submit, submit_prepare
        data_ids = submit_prepare(prepare_for_submit(sub.prepare, cluster, cfg.data.dataset_path))  # local: waits
        after_data = {"dependency": f"afterok:{data_ids['summary']}", "kill-on-invalid-dep": "yes"}
    pre_ex = make_executor(sub, cluster, folder, "hpc_bert_pretrain", sub.allocation_hours, tasks, delay,
                           after_data if cluster == "slurm" else None)
    job = PretrainJob(train_argv, run_dir, sub.max_requeues, workdir)
    print(f"hpc_bert: budget {sub.budget:g} h in allocations of {sub.allocation_hours:g} h on {cluster} "
          f"(up to {sub.max_requeues} requeues, signal {delay} s before the limit); run dir {run_dir}"
          + (f"; GLUE: {len(glue_runs)} fine-tuning runs over {', '.join(checkpoints)}" if glue_runs else ""),
          flush=True)
    if sub.dry_run:
        return dry_run(sub, cluster, folder, pre_ex, glue_runs, delay)
    os.makedirs(run_dir, exist_ok=True)
    if cluster == "local":
        return run_local(sub, folder, pre_ex, job, glue_runs, checkpoints, run_dir, workdir, delay)
    pre = pre_ex.submit(job)
    print(f"hpc_bert: pretraining job {pre.job_id}", flush=True)
    if glue_runs:
        dep = {"dependency": f"afterok:{pre.job_id}", "kill-on-invalid-dep": "yes"}
        glue_ex = make_executor(sub, cluster, folder, "hpc_bert_glue", sub.glue_allocation_hours, 1, delay, dep)
        glue_ex.update_parameters(array_parallelism=sub.glue_parallelism)
        glue_jobs = glue_ex.map_array(GlueTask(sub.glue, run_dir, checkpoints, workdir), range(len(glue_runs)))
        array_id = glue_jobs[0].job_id.split("_")[0]
        agg_ex = make_executor(sub, cluster, folder, "hpc_bert_aggregate", 0.25, 1, delay,
                               {"dependency": f"afterany:{array_id}", "kill-on-invalid-dep": "yes"})
        agg = agg_ex.submit(AggregateTask(run_dir, workdir))
        print(f"hpc_bert: GLUE array {array_id} ({len(glue_runs)} tasks, afterok:{pre.job_id}); "
              f"aggregation {agg.job_id} (afterany:{array_id})", flush=True)
    print(f"hpc_bert: watch it with: python -m hpc_bert.status {run_dir}", flush=True)
    return 0


def dry_run(sub, cluster, folder, pre_ex, glue_runs, delay) -> int:
    if cluster == "local":
        print("hpc_bert: --cluster local runs jobs on this machine; no scripts to show: "
              "pass --cluster slurm --dry_run to see the sbatch scripts", flush=True)
        return 0
    print("#### pretraining ####")
    print(sbatch_text(pre_ex))
    if glue_runs:
        glue_ex = make_executor(sub, cluster, folder, "hpc_bert_glue", sub.glue_allocation_hours, 1, delay,
                                {"dependency": "afterok:<pretrain_job_id>", "kill-on-invalid-dep": "yes"})
        glue_ex.update_parameters(array_parallelism=sub.glue_parallelism)
        print(f"#### GLUE array: {len(glue_runs)} tasks ####")
        print(sbatch_text(glue_ex, array=len(glue_runs)))
        agg_ex = make_executor(sub, cluster, folder, "hpc_bert_aggregate", 0.25, 1, delay,
                               {"dependency": "afterany:<glue_array_id>", "kill-on-invalid-dep": "yes"})
        print("#### aggregation ####")
        print(sbatch_text(agg_ex))
    return 0


def run_local(sub, folder, pre_ex, job, glue_runs, checkpoints, run_dir, workdir, delay) -> int:
    """The same chain on this machine: each stage waits for the one before (afterok / afterany)."""
    from hpc_bert.launch.jobs import AggregateTask, GlueTask
    from hpc_bert.launch.status import render
    pre = pre_ex.submit(job)
    print(f"hpc_bert: pretraining (local job {pre.job_id}); log: {pre.paths.stdout}", flush=True)
    try:
        pre.result()
    except Exception as e:  # submitit re-raises the job's failure
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"pretraining failed ({last}): see {pre.paths.stderr}; GLUE was not started") from None
    print(render(run_dir), flush=True)
    if not glue_runs:
        return 0
    glue_ex = make_executor(sub, "local", folder, "hpc_bert_glue", sub.glue_allocation_hours, 1, delay)
    task = GlueTask(sub.glue, run_dir, checkpoints, workdir)
    for i in range(len(glue_runs)):
        j = glue_ex.submit(task, i)
        try:
            j.result()
        except Exception:  # afterany: the table reports what finished
            print(f"hpc_bert: GLUE run {i} failed; see {j.paths.stderr}", flush=True)
    agg_ex = make_executor(sub, "local", folder, "hpc_bert_aggregate", 0.25, 1, delay)
    agg_ex.submit(AggregateTask(run_dir, workdir)).result()
    table = os.path.join(run_dir, "glue_results.md")
    if os.path.exists(table):
        print(open(table).read(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
