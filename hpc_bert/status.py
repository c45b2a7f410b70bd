"""``python -m hpc_bert.status``: the entry point of ``hpc_bert.launch.status``."""
from hpc_bert.launch.status import main

if __name__ == "__main__":
    raise SystemExit(main())
