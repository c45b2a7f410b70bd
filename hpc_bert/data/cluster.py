"""Data preparation as jobs (``prepare --cluster slurm|local``), through submitit.

Three steps, each a job, each ``afterok`` on the one before on SLURM:
  split    text shards + tokenizer (pipeline.split_stage), on one node's cores
  samples  a job array, one task per group of ``--shards_per_task`` sample shards, at most
           ``--array_parallelism`` running at once; each task makes only its own shards
  summary  prepare.json from the shards' counts
Every step resumes (complete outputs of the same settings are kept), so a failed or
preempted task is simply submitted again. ``--cluster local`` runs the same steps one after
the other on this machine through submitit's LocalExecutor. ``submit_prepare`` returns the
summary job's id: a pretraining job can run ``afterok`` on it.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Callable

from hpc_bert.config.flags import parse_config
from hpc_bert.data.config import PrepareConfig
from hpc_bert.data.pipeline import samples_stage, split_stage, summary_stage
from hpc_bert.data.shards import open_inputs, shard_name
from hpc_bert.data.tokenizer import load_tokenizer
from hpc_bert.errors import ConfigError
from hpc_bert.layout import SUBMITIT_DIR


@dataclasses.dataclass(frozen=True)
class SplitTask:
    cfg: PrepareConfig

    def __call__(self) -> int:
        return split_stage(self.cfg, log=print)["num_documents"]


@dataclasses.dataclass(frozen=True)
class SamplesTask:
    cfg: PrepareConfig
    groups: tuple[tuple[str, ...], ...]

    def __call__(self, group: int) -> int:
        return sum(s["samples"] for s in samples_stage(self.cfg, set(self.groups[group]), log=print))


@dataclasses.dataclass(frozen=True)
class SummaryTask:
    cfg: PrepareConfig

    def __call__(self) -> float:
        return summary_stage(self.cfg, log=print)["real_token_fraction"]


def shard_groups(cfg: PrepareConfig) -> tuple[tuple[str, ...], ...]:
    """Text shard names, ``--shards_per_task`` per array task (known before the split runs)."""
    names = [shard_name("train", i) for i in range(cfg.split.num_train_shards)] + \
            [shard_name("test", i) for i in range(cfg.split.num_test_shards)]
    k = cfg.jobs.shards_per_task
    return tuple(tuple(names[i:i + k]) for i in range(0, len(names), k))


def make_executor(cfg: PrepareConfig, name: str, dependency: str | None = None):
    import submitit

    folder = os.path.join(os.path.abspath(cfg.output_dir), SUBMITIT_DIR)
    jobs = cfg.jobs
    if jobs.cluster == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=jobs.time_min)
        return ex
    ex = submitit.SlurmExecutor(folder=folder)
    params = dict(job_name=name, time=jobs.time_min, nodes=1, ntasks_per_node=1, cpus_per_task=jobs.cpus_per_task,
                  array_parallelism=jobs.array_parallelism)
    if jobs.partition:
        params["partition"] = jobs.partition
    if dependency:
        params["additional_parameters"] = {"dependency": dependency, "kill-on-invalid-dep": "yes"}
    ex.update_parameters(**params)
    return ex


def submit_prepare(cfg: PrepareConfig, log: Callable[[str], None] = print) -> dict[str, str]:
    """Submit the split job, the samples array and the summary job; returns their ids."""
    if cfg.tokenizer.tokenizer_name:  # a bad name or input fails here, not in a queued job
        load_tokenizer(cfg.tokenizer.tokenizer_name)
    if cfg.inputs.input:
        open_inputs(cfg.inputs)  # every input file opened, its first document read
    os.makedirs(cfg.output_dir, exist_ok=True)
    groups = shard_groups(cfg)
    local = cfg.jobs.cluster == "local"
    split = make_executor(cfg, "hpc_bert_data_split").submit(SplitTask(cfg))
    if local:
        split.result()  # no dependencies in LocalExecutor: wait instead (re-raises a failure)
    array_ex = make_executor(cfg, "hpc_bert_data_samples", f"afterok:{split.job_id}")
    tasks = array_ex.map_array(SamplesTask(cfg, groups), range(len(groups)))
    array_id = tasks[0].job_id.split("_")[0]
    if local:
        for task in tasks:
            task.result()
    summary = make_executor(cfg, "hpc_bert_data_summary", f"afterok:{array_id}").submit(SummaryTask(cfg))
    if local:
        summary.result()
    ids = {"split": split.job_id, "samples": array_id, "summary": summary.job_id}
    log(f"hpc_bert: data split job {ids['split']}; samples array {array_id} ({len(groups)} tasks, "
        f"afterok:{ids['split']}); summary job {ids['summary']} (afterok:{array_id}); "
        f"logs in {os.path.join(cfg.output_dir, SUBMITIT_DIR)}")
    return ids


def prepare_for_submit(prepare_args: str, cluster: str, dataset_path: str | None) -> PrepareConfig:
    """The PrepareConfig of ``submit --prepare "ARGS"``, checked before anything is submitted:
    its jobs run on submit's cluster and write the pretraining job's --dataset_path."""
    argv = shlex.split(prepare_args)
    if "--cluster" in argv or "--output_dir" in argv:
        raise ConfigError("--prepare takes no --cluster / --output_dir: the data jobs run on submit's cluster and "
                          "write the pretraining --dataset_path")
    if not dataset_path:
        raise ConfigError("--prepare needs --dataset_path DIR (where the data jobs write the shards)")
    cfg, _ = parse_config(PrepareConfig, [*argv, "--cluster", cluster, "--output_dir", dataset_path],
                          prog="python -m hpc_bert.submit --prepare")
    return cfg
