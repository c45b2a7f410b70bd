"""The launcher: submit the chain (pretraining with requeues -> GLUE array -> table), the code
that runs inside each job, the run lock, and status. It knows nothing of training: it starts
``hpc_bert.pretrain`` and maps its exit status onto the scheduler."""
