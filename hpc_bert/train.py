"""``python -m hpc_bert.train``: the entry point of ``hpc_bert.pretrain.train``."""
from hpc_bert.pretrain.train import main

if __name__ == "__main__":
    raise SystemExit(main())
