"""``python -m hpc_bert``: list the entry points."""
print("""hpc_bert — BERT pretraining under a wall-clock budget, requeue-safe on SLURM

  python -m hpc_bert.submit    submit pretraining + GLUE array + aggregation (slurm or local)
  python -m hpc_bert.train     pretrain (one allocation; resumes from the run dir)
  python -m hpc_bert.schedule  print the time-driven schedule as a table
  python -m hpc_bert.data      fetch corpora, shard, make masked samples (HDF5)
  python -m hpc_bert.finetune  fine-tune one checkpoint on one GLUE task
  python -m hpc_bert.glue      expand / run / aggregate the GLUE grid
  python -m hpc_bert.status    render a run dir's ledger, events and results
  python -m hpc_bert.demo      the README demo
""")
