"""``python -m hpc_bert.data``: the entry point of ``hpc_bert.data.cli``."""
from hpc_bert.data.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
