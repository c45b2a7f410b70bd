"""GLUE fine-tuning: task formats (tasks), metrics, the fine-tune grid (grid) and the table
(aggregate). The single-run entry point is ``python -m hpc_bert.finetune``; the grid's is
``python -m hpc_bert.glue {expand,run,aggregate}``."""
from hpc_bert.glue.tasks import TASK_ORDER, TASKS, get_task

__all__ = ["TASKS", "TASK_ORDER", "get_task"]
