"""hpc_bert: pretrain BERT under a wall-clock budget on SLURM, requeue-safe, and score it on GLUE.

One folder per component, data flowing left to right:
config (dataclasses, flags) -> launch (submit, jobs, status) -> pretrain (trainer, clock, ledger,
schedule, step decision, checkpoints) with model and data -> glue (fine-tune, grid, table).
Shared facts live at the top: errors (exit statuses), atomic (crash-safe files), layout (run-dir
names). The ``python -m hpc_bert.<entry>`` modules here are thin entry points.
"""
