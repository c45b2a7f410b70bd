"""``python -m hpc_bert.sweep``: the entry point of ``hpc_bert.launch.sweep``."""
from hpc_bert.launch.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
