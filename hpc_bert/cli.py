"""``hpc-bert COMMAND ...``: the package's one console script, dispatching to each command's
``main`` (``python -m hpc_bert.COMMAND ...`` runs the same code)."""
from __future__ import annotations

import importlib
import sys

# command -> (module with main, what it does); a command's module is imported only when it runs,
# so ``hpc-bert status`` starts as light as ``python -m hpc_bert.status``
COMMANDS = {
    "submit": ("hpc_bert.launch.submit", "submit pretraining + GLUE array + aggregation (slurm or local)"),
    "sweep": ("hpc_bert.launch.sweep", "many budgeted runs as one job array, GLUE per member, one leaderboard"),
    "train": ("hpc_bert.pretrain.cli", "pretrain (one allocation; resumes from the run dir)"),
    "status": ("hpc_bert.launch.status", "render a run dir's ledger, events, throughput and results"),
    "data": ("hpc_bert.data.cli", "fetch corpora, shard, make masked samples (HDF5)"),
    "glue": ("hpc_bert.glue.cli", "expand / run / aggregate the GLUE grid"),
    "export": ("hpc_bert.launch.export", "a run's checkpoint as a folder transformers loads, with a model card"),
    "finetune": ("hpc_bert.glue.finetune", "fine-tune one checkpoint on one GLUE task"),
    "schedule": ("hpc_bert.pretrain.schedule", "print the time-driven schedule as a table"),
    "demo": ("hpc_bert.demo", "the whole pipeline on 2 CPU cores in a few minutes"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: hpc-bert COMMAND [ARGS ...]   (COMMAND --help for its flags)", "",
             "hpc_bert: BERT pretraining under a wall-clock budget, requeue-safe on SLURM", "", "commands:"]
    return "\n".join(lines + [f"  {name.ljust(width)}  {what}" for name, (_, what) in COMMANDS.items()])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"hpc-bert: error: unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)} "
              "(hpc-bert --help lists them)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])  # by name: only the chosen command's imports
    sys.argv = [f"hpc-bert {argv[0]}", *argv[1:]]
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
