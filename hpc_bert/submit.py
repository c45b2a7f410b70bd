"""``python -m hpc_bert.submit``: the entry point of ``hpc_bert.launch.submit``."""
from hpc_bert.launch.submit import main

if __name__ == "__main__":
    raise SystemExit(main())
