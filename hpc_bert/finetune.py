"""``python -m hpc_bert.finetune``: the entry point of ``hpc_bert.glue.finetune``."""
from hpc_bert.glue.finetune import main

if __name__ == "__main__":
    raise SystemExit(main())
