"""``python -m hpc_bert.export``: the entry point of ``hpc_bert.launch.export``."""
from hpc_bert.launch.export import main

if __name__ == "__main__":
    raise SystemExit(main())
