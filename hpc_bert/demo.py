"""``python -m hpc_bert.demo``: the README's first command, end to end on 2 CPU cores."""
from __future__ import annotations

import sys

from hpc_bert import schedule


def main(argv=None) -> int:
    print("== the time-driven schedule of configs/pretrain/tiny.yaml ==", flush=True)
    return schedule.main(["--config", "configs/pretrain/tiny.yaml", "--points", "11"])


if __name__ == "__main__":
    sys.exit(main())
