"""``python -m hpc_bert.train``: the entry point of ``hpc_bert.pretrain.cli``."""
from hpc_bert.pretrain.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
