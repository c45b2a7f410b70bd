"""The launcher: submit the chain (pretraining with requeues -> GLUE array -> table), the code
that runs inside each job, status and cancel. It never reaches into the training loop: a
job starts the train command (``pretrain/cli.py``) and maps its exit status onto the scheduler, and
status reads what training wrote (ledger, events, checkpoints) through ``layout`` and the clock's
ledger. It may import every other layer; nothing imports it."""
