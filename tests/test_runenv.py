"""hpc_bert/runenv.py: scheduler variables in, neutral facts out; the one MASTER_PORT formula."""
import os
import socket
import subprocess
import sys

from hpc_bert import runenv
from hpc_bert.pretrain.clock import Ledger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "3", "SLURM_JOB_NODELIST": "gpu17",
         "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0"}


def test_master_port_is_a_function_of_the_job_id():
    assert runenv.master_port("4242") == 20000 + 4242
    assert runenv.master_port("45000") == 20000 + 45000 % 20000
    # the tasks of a job array are separate allocations that may share a node
    assert runenv.master_port("4242_7") == 20000 + 4249 != runenv.master_port("4242_0")
    assert runenv.master_port(None) == runenv.master_port("local-x") == runenv.DEFAULT_PORT


def test_job_id_restart_count_and_hosts():
    assert runenv.job_id(SLURM) == "4242" and runenv.restart_count(SLURM) == 3
    assert runenv.restart_count({"SLURM_JOB_ID": "9"}) == 0  # before the first requeue SLURM sets none
    assert runenv.job_id({"SUBMITIT_LOCAL_JOB_ID": "77"}) == "local-77"
    assert runenv.job_id({}) is None and runenv.restart_count({}) is None
    assert runenv.hosts({}) == [socket.gethostname()]
    assert runenv.hosts({"SLURM_JOB_NODELIST": "gpu17"}) == ["gpu17"]


def test_rank_layout_from_torchrun_then_slurm_then_single_process():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "1234"}
    assert runenv.dist_env({**SLURM, **torchrun}) == runenv.DistEnv(1, 2, 1, "h0", 1234)
    assert runenv.dist_env(SLURM) == runenv.DistEnv(5, 8, 1, "gpu17", 20000 + 4242)
    assert runenv.dist_env({**SLURM, "MASTER_PORT": "999"}).master_port == 999
    assert runenv.dist_env({}) == runenv.DistEnv(0, 1, 0, "127.0.0.1", runenv.DEFAULT_PORT)


def test_allocation_deadline():
    assert runenv.allocation_end({runenv.DEADLINE_ENV: "1700000000.5"}) == 1700000000.5
    assert runenv.allocation_end({runenv.DEADLINE_ENV: ""}) is None
    assert runenv.allocation_end({runenv.DEADLINE_ENV: "soon"}) is None
    assert runenv.allocation_end({}) is None


def test_sbatch_template_uses_the_one_port_formula():
    """slurm/pretrain.sbatch is shell: it asks runenv instead of retyping the formula."""
    template = open(os.path.join(REPO, "slurm", "pretrain.sbatch")).read()
    assert 'eval "$(python -m hpc_bert.runenv exports)"' in template
    assert "SLURM_JOB_ID %" not in template and "20000" not in template
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    out = subprocess.run([sys.executable, "-m", "hpc_bert.runenv", "exports"], cwd=REPO, capture_output=True,
                         text=True, env={**env, "SLURM_JOB_ID": "4242", "MASTER_PORT": "29334"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "export MASTER_PORT=24242" in out.stdout.splitlines()  # the job's, not one the shell passed on
    port = subprocess.run([sys.executable, "-m", "hpc_bert.runenv", "port"], cwd=REPO, capture_output=True,
                          text=True, env={**env, "SLURM_JOB_ID": "4242"}, timeout=60)
    assert port.stdout.strip() == str(runenv.master_port("4242"))


def test_ledger_reads_the_run_environment(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith(("SLURM_", "SUBMITIT_")):
            monkeypatch.delenv(k)
    ledger = Ledger(str(tmp_path), 3600.0)
    first = ledger.begin_allocation(resumed_elapsed_s=0.0, step=0, startup_s=1.0)
    assert first.job_id == f"pid-{os.getpid()}" and first.restart_count == 0
    assert first.hosts == [socket.gethostname()]
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "55")
    second = ledger.begin_allocation(resumed_elapsed_s=0.0, step=0, startup_s=1.0)
    assert second.job_id == "local-55" and second.restart_count == 1  # counted from the ledger
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "6")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu17")
    third = ledger.begin_allocation(resumed_elapsed_s=0.0, step=0, startup_s=1.0)
    assert (third.job_id, third.restart_count, third.hosts) == ("4242", 6, ["gpu17"])


def test_local_executor_deadline():
    import time
    end = runenv.local_end_time({"SUBMITIT_LOCAL_TIMEOUT_S": "60"})
    assert abs(end - (time.time() + 60)) < 5
    assert runenv.local_end_time({}) is None
