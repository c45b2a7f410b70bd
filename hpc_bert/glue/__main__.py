"""``python -m hpc_bert.glue``: the entry point of ``hpc_bert.glue.cli``."""
from hpc_bert.glue.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
