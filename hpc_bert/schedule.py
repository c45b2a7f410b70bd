"""``python -m hpc_bert.schedule``: the entry point of ``hpc_bert.pretrain.schedule``."""
from hpc_bert.pretrain.schedule import main

if __name__ == "__main__":
    raise SystemExit(main())
