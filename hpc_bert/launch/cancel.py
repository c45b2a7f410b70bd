"""``python -m hpc_bert.submit --cancel RUN_DIR``: stop the chain without losing training.

Order matters. First the cancel is recorded in RUN_DIR/chain.json, so the pretraining job,
when its trainer exits to be requeued, ends instead (jobs.PretrainJob). Then the GLUE array
and the aggregation are cancelled while they still pend, so that no ending of pretraining
can release them. Then the running pretraining job gets its stop signal, USR2, on its job
steps (``scancel --signal=USR2``: submitit's trainer runs in an srun step, and its batch
shell has no trap, so ``-b`` would end the job without a save): the trainer saves a
checkpoint and exits. A job still pending is simply cancelled. The same submit command
later continues the budget from the newest checkpoint.
"""
from __future__ import annotations

import os
import subprocess
import time

from hpc_bert.atomic import write_json_atomic
from hpc_bert.errors import UserError
from hpc_bert.launch.queue import PENDING_STATES, RUNNING_STATES, job_state, read_chain
from hpc_bert.layout import CHAIN_FILE

WAIT_S = 900  # the trainer needs one checkpoint save (the signal lead allows 3x the measured save)


def cancel_target(argv: list[str], usage: str) -> str:
    """The folder ``--cancel DIR`` (or ``--cancel=DIR``) names; ``usage`` completes the refusal."""
    for i, a in enumerate(argv):
        if a.startswith("--cancel="):
            return a.split("=", 1)[1]
        if a == "--cancel" and i + 1 < len(argv):
            return argv[i + 1]
    raise UserError(f"--cancel needs {usage}")


def cancel_requested(run_dir: str) -> bool:
    chain = read_chain(run_dir)
    return bool(chain and chain.get("cancel_requested"))


def _scancel(*args: str) -> None:
    r = subprocess.run(["scancel", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise UserError(f"scancel {' '.join(args)} failed ({' '.join(r.stderr.split())}): check the job ids "
                        "with squeue, or cancel them by hand")


def cancel_chain(argv: list[str]) -> int:
    run_dir = cancel_target(argv, "the run dir: python -m hpc_bert.submit --cancel RUN_DIR")
    chain = read_chain(run_dir)
    if chain is None:
        raise UserError(f"{run_dir} has no {CHAIN_FILE}: no chain was submitted to SLURM from this run dir "
                        "(a --cluster local run stops with Ctrl-C)")
    chain["cancel_requested"] = time.time()
    write_json_atomic(os.path.join(run_dir, CHAIN_FILE), chain)
    jobs = chain["jobs"]
    dependents = [jobs[r] for r in ("aggregate", "glue_round2", "glue_array") if r in jobs]
    if dependents:
        _scancel(*dependents)
        print(f"hpc_bert: cancelled the GLUE array and aggregation ({', '.join(dependents)})", flush=True)
    pre = jobs["pretrain"]
    st = job_state(pre)
    if st.state in RUNNING_STATES:
        _scancel("--signal=USR2", pre)
        print(f"hpc_bert: sent USR2 to pretraining job {pre}; waiting for its checkpoint", flush=True)
        deadline = time.monotonic() + WAIT_S
        while st.state in RUNNING_STATES and time.monotonic() < deadline:
            time.sleep(2)
            st = job_state(pre)
        if st.state in RUNNING_STATES:
            raise UserError(f"pretraining job {pre} still runs {WAIT_S} s after its stop signal: look at its log "
                            f"in {chain['logs']}, then scancel {pre} (the newest complete checkpoint stays)")
    if st.state in PENDING_STATES:  # never started, or requeued by submitit before the trainer ran
        _scancel(pre)
    print(f"hpc_bert: chain of {run_dir} stopped; continue it with the same submit command", flush=True)
    return 0
