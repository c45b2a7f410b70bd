"""What ``submit`` fills in when the user leaves it out: the recipe, GPUs per node and the
allocation length, from the cluster where it can tell.

- No ``--config``: on SLURM the paper's recipe (BERT-large, academic budget) with one task per GPU,
  GPUs per node from ``--gpus_per_node`` or the partition's GRES; on ``--cluster local`` the tiny
  CPU model. With ``--config``, ``--gpus_per_node`` defaults to 0 (a CPU job), as before.
- ``--allocation_hours auto``: the partition's MaxTime, capped by the QOS's MaxWall where
  accounting answers; 24 h, with a note, where neither sets a limit (and on ``--cluster local``).
"""
from __future__ import annotations

from hpc_bert.errors import UserError
from hpc_bert.launch import queue
from hpc_bert.launch.slurm_limits import partition_gpus, partition_max_time, qos_max_wall

HEADLINE_CONFIG = "configs/pretrain/academic-bert-large.yaml"
CPU_TEST_CONFIG = "configs/pretrain/tiny.yaml"
NO_LIMIT_HOURS = 24.0


def resolve_cluster(cluster: str) -> str:
    return ("slurm" if queue.slurm_available() else "local") if cluster == "auto" else cluster


def resolve_recipe(sub) -> None:
    """Set ``sub.cluster`` (auto resolved), ``sub.pretrain_config`` and ``sub.gpus_per_node``."""
    sub.cluster = resolve_cluster(sub.cluster)
    if sub.pretrain_config is None and sub.cluster == "local":
        sub.pretrain_config = CPU_TEST_CONFIG
    elif sub.pretrain_config is None:
        sub.pretrain_config = HEADLINE_CONFIG
        if sub.gpus_per_node is None:
            name, gpus = partition_gpus(sub.partition)
            if not gpus:
                why = f"SLURM reports no GPUs in partition {name}" if name else "SLURM cannot tell the GPUs per node here"
                raise UserError(f"{why}, and the default recipe ({HEADLINE_CONFIG}) runs one task per GPU: pass --gpus_per_node N (GPUs per node), or --config "
                                f"{CPU_TEST_CONFIG} for the CPU test")
            sub.gpus_per_node = gpus
    if sub.gpus_per_node is None:
        sub.gpus_per_node = 0


def resolve_allocation_hours(sub) -> str:
    """Set ``sub.allocation_hours`` (a number) and return where it came from, for the plan line."""
    if sub.allocation_hours != "auto":
        return ""
    if sub.cluster == "local":
        sub.allocation_hours = NO_LIMIT_HOURS
        return f"auto: {NO_LIMIT_HOURS:g} h, a local job has no time limit"
    name, max_time = partition_max_time(sub.partition)
    max_wall = qos_max_wall(sub.qos)
    limits = [(h, why) for h, why in ((max_time, f"MaxTime of partition {name}"),
                                      (max_wall, f"MaxWall of QOS {sub.qos}")) if h]
    if not limits:
        sub.allocation_hours = NO_LIMIT_HOURS
        where = f"partition {name}" if name else "the partition"
        return f"auto: no time limit reported for {where}, so {NO_LIMIT_HOURS:g} h; pass --allocation_hours H to change"
    hours, why = min(limits)
    sub.allocation_hours = hours
    return f"auto: the {why}"
