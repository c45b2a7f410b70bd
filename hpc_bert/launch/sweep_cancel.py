"""``python -m hpc_bert.sweep --cancel SWEEP_DIR``: stop every member without losing training.

The leaderboard job goes first (cancelling the members' aggregations would release it), then each
member of the last submission is stopped as ``submit --cancel`` stops one chain (cancel.py): its
GLUE jobs are cancelled while they pend, a running array task gets its stop signal and saves, a
pending one is cancelled. The same sweep command later continues every unfinished member.
"""
from __future__ import annotations

import os
import subprocess
import time

from hpc_bert.atomic import write_json_atomic
from hpc_bert.errors import UserError
from hpc_bert.launch import leaderboard
from hpc_bert.launch.cancel import cancel_chain, cancel_target
from hpc_bert.launch.queue import read_chain
from hpc_bert.layout import SWEEP_FILE


def cancel_sweep(argv: list[str]) -> int:
    sweep_dir = cancel_target(argv, "the sweep dir: python -m hpc_bert.sweep --cancel SWEEP_DIR")
    record = leaderboard.read_sweep(sweep_dir)
    if record is None:
        raise UserError(f"{sweep_dir} has no {SWEEP_FILE}: pass the --sweep_dir of a submitted sweep")
    if not record["submissions"] or record.get("cluster") != "slurm":
        raise UserError(f"{sweep_dir} has no sweep submitted to SLURM (a --cluster local sweep stops with Ctrl-C)")
    last = record["submissions"][-1]
    last["cancel_requested"] = time.time()
    write_json_atomic(os.path.join(sweep_dir, SWEEP_FILE), record)
    if last.get("leaderboard"):
        subprocess.run(["scancel", last["leaderboard"]], capture_output=True, timeout=60)
        print(f"hpc_bert: cancelled the leaderboard job {last['leaderboard']}", flush=True)
    run_dirs = {m["name"]: m["run_dir"] for m in record["members"]}
    for name in last["tasks"]:
        if read_chain(run_dirs[name]) is not None:
            print(f"hpc_bert: member {name}:", flush=True)
            cancel_chain(["--cancel", run_dirs[name]])
    print(f"hpc_bert: sweep {sweep_dir} stopped; continue it with the same sweep command", flush=True)
    return 0
