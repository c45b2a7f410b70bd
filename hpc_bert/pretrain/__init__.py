"""Pretraining under a wall-clock budget: the trainer loop, the budget clock and its ledger,
the schedule (pure functions of progress), the step decision, checkpoints, the process group
and stop flag, and the event log. It knows SLURM only as a stop flag and a deadline."""
