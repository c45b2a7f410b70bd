"""Session fixture `slurm_cluster` and small helpers for tests against a real SLURM.

tests/conftest.py imports it:  ``from slurm_fixture import slurm_cluster  # noqa: F401``

The fixture uses a live cluster when `sinfo` already answers (external, left alone);
otherwise it starts the private two-node cluster of tests/slurm_local.py (installing the
Debian packages as root when missing) and sets ``os.environ["SLURM_CONF"]`` for the
session, so that code which calls sbatch itself (submitit) reaches it too. At the end of
the session it stops what it started, unless ``HPC_BERT_SLURM_KEEP=1``.

Without root and without SLURM the tests are skipped, unless
``HPC_BERT_REQUIRE_SLURM=1`` (then they fail). Environment knobs:
``HPC_BERT_SLURM_STATE_DIR`` (default /tmp/hpc_bert_slurm), ``HPC_BERT_SLURM_PORT``.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_slurm_local():
    """The SLURM harness, tests/slurm_local.py (tests/ is on sys.path under pytest)."""
    import slurm_local
    return slurm_local


@pytest.fixture(scope="session")
def slurm_cluster():
    sl = load_slurm_local()
    state_dir = os.environ.get("HPC_BERT_SLURM_STATE_DIR", sl.DEFAULT_STATE_DIR)
    require = os.environ.get("HPC_BERT_REQUIRE_SLURM") == "1"
    try:
        cluster = sl.start(state_dir)
    except sl.SlurmHarnessError as e:
        if os.geteuid() != 0 and not require:
            pytest.skip(f"no SLURM here and not root to start one: {e}")
        pytest.fail(f"could not start the test SLURM cluster: {e}", pytrace=False)
    saved = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.slurm_env)
    try:
        yield cluster
    finally:
        if "SLURM_CONF" in cluster.slurm_env:
            if saved is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = saved
        if cluster.started and os.environ.get("HPC_BERT_SLURM_KEEP") != "1":
            sl.stop(cluster)


# --------------------------------------------------------------------------- helpers

def sbatch(cluster, script: str, *args, cwd: Path, name: str = "hpcbert-test") -> int:
    """Submit `script` (a bash script body; '#!/bin/bash' added) and return the job id.
    Output goes to cwd/slurm-<id>.out unless args set -o."""
    cwd = Path(cwd)
    path = cwd / f"{name}-{time.monotonic_ns()}.sh"
    path.write_text("#!/bin/bash\n" + script)
    cmd = ["sbatch", "--parsable", "-J", name, "--chdir", str(cwd)]
    if not any(a == "-o" or str(a).startswith("--output") for a in args):
        cmd += ["-o", str(cwd / "slurm-%j.out")]
    r = cluster.run(*cmd, *args, str(path), check=False)
    assert r.returncode == 0, f"sbatch failed: {r.stderr.strip()}"
    return int(r.stdout.strip().split(";")[0])


def job_info(cluster, job_id: int) -> dict | None:
    """`scontrol show job` fields as a dict; None once the job is purged (MinJobAge)."""
    r = cluster.run("scontrol", "show", "job", "-o", str(job_id), check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return None
    line = r.stdout.splitlines()[0]
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))


def job_state(cluster, job_id: int) -> str | None:
    info = job_info(cluster, job_id)
    return info.get("JobState") if info else None


def wait_until(pred, timeout: float, what: str, interval: float = 0.25):
    """Poll pred() until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                         f"(last: {last!r})")


def wait_state(cluster, job_id: int, states, timeout: float) -> dict:
    """Wait until the job is in one of `states`; returns its scontrol fields."""
    states = {states} if isinstance(states, str) else set(states)
    seen = []

    def pred():
        info = job_info(cluster, job_id)
        st = info.get("JobState") if info else None
        if not seen or seen[-1] != st:
            seen.append(st)
        return info if st in states else None

    try:
        return wait_until(pred, timeout, f"job {job_id} in {sorted(states)}")
    except AssertionError as e:
        raise AssertionError(f"{e}; states seen: {seen}") from None


def scancel(cluster, *job_ids) -> None:
    if job_ids:
        cluster.run("scancel", *map(str, job_ids), check=False)


def read_lines(path: Path) -> list[str]:
    try:
        return Path(path).read_text().split()
    except FileNotFoundError:
        return []
