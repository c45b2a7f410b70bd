"""Resuming on another number of ranks, and loading a run dir as data, not code.

The defining property: a run on 2 CPU ranks (gloo), stopped, continued on 1 rank, stopped, and
finished on 2 ranks sees the same global batches step by step, the same LR / validation /
marker trace, and ends with the uninterrupted 2-rank run's weights up to float summation
order (accumulating 4 micro batches on one rank adds the gradients in another order than
2 x 2 over an all-reduce). Dropout is off: its per-rank streams cannot carry over to another
number of ranks (hpc_bert.pretrain.elastic).
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from hpc_bert.errors import UserError
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.elastic import accumulation_steps, world_sizes_for
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import REPO, final_weights, simulated_flags, train

STEP_S = 10.0
STEPS = 24
HOURS = STEPS * STEP_S / 3600
# Stated tolerance on the final weights across world sizes: fp32 re-association over 24 Adam
# steps moves weights by ~1e-7 relative; 1e-4 absolute still fails on any wrong batch or lost moment.
WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-4


def test_accumulation_is_re_derived_and_a_bad_world_size_names_the_good_ones():
    assert accumulation_steps(16, 4, 2) == 2 and accumulation_steps(16, 4, 1) == 4
    assert world_sizes_for(48, 4) == [1, 2, 3, 4, 6, 12]
    with pytest.raises(UserError, match=r"micro batch x world size = 4 x 5: with micro batch 4 run on "
                                        r"1, 2, 3, 4, 6, 12 ranks"):
        accumulation_steps(48, 4, 5)
    with pytest.raises(UserError, match="not a multiple of --train_micro_batch_size_per_gpu 5"):
        accumulation_steps(48, 5, 1)


def test_status_shows_the_world_size_of_every_allocation(tmp_path):
    led = Ledger(str(tmp_path), budget_s=100)
    for ranks in (2, 1, 2):
        led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=1.0, job_id=f"j{ranks}", world_size=ranks)
    assert [a.world_size for a in Ledger.load(str(tmp_path)).allocations] == [2, 1, 2]
    out = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO).stdout
    header = next(line for line in out.splitlines() if line.startswith("#"))
    col = header.split().index("ranks")
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[col] for r in rows] == ["2", "1", "2"]


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    from hpc_bert.pretrain.checkpoint import rng_state, safe_load, set_rng_state
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    torch.save({"rng": rng_state()}, tmp_path / "state.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(safe_load(str(tmp_path / "state.pt"))["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    from hpc_bert.pretrain.checkpoint import safe_load
    proof = tmp_path / "code_ran"
    torch.save({"rng": RunsCode(str(proof))}, tmp_path / "rank_0_state.pt")
    with pytest.raises(UserError, match=r"rank_0_state.pt is not plain checkpoint data .*GLOBAL posix.system") as e:
        safe_load(str(tmp_path / "rank_0_state.pt"))
    assert len(str(e.value).splitlines()) == 1 and not proof.exists()
    with pytest.raises(UserError, match=r"rank_0_state.pt is not plain checkpoint data"):
        safe_load(str(tmp_path / "rank_0_state.pt"), deepspeed_types=True)  # the DeepSpeed allow-list is no way in
    assert not proof.exists()
    (tmp_path / "torn.pt").write_bytes((tmp_path / "rank_0_state.pt").read_bytes()[:40])
    with pytest.raises(UserError, match="torn.pt cannot be read .*the checkpoint is damaged"):
        safe_load(str(tmp_path / "torn.pt"))


# ---- end to end: real DeepSpeed, gloo, simulated clock --------------------------------------

def flags(run_dir, inputs, **over):
    return simulated_flags(run_dir, inputs, HOURS, STEP_S, **{
        "train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **over})


def trace(run_dir) -> dict:
    ev = read_events(str(run_dir))  # later allocations win duplicated steps
    return {"ids": {e["step"]: e["batch_ids"] for e in ev if e["event"] == "train"},
            "lr": {e["step"]: e["lr"] for e in ev if e["event"] == "train"},
            "loss": {e["step"]: e["loss"] for e in ev if e["event"] == "train"},
            "validation": {e["step"]: (e["progress"], e["val_loss"]) for e in ev if e["event"] == "validation"},
            "marker": {e["marker"]: (e["step"], e["progress"]) for e in ev if e["event"] == "marker"}}


class Allocation:
    """One allocation's ranks as srun starts them: a process per rank, each exiting on its own
    (torchrun would report a child's 75 as 1 and terminate the other ranks)."""

    def __init__(self, flags: list[str], faults: str, procs: int, log_dir):
        with socket.socket() as s:  # a free port for this allocation's process group
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HPC_BERT_FAULTS=faults,
                   WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        logs = [open(os.path.join(str(log_dir), f"rank{r}-{port}.err"), "w+") for r in range(procs)]
        ranks = [subprocess.Popen([sys.executable, "-m", "hpc_bert.train", *flags], cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=log, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)))
                 for r, log in enumerate(logs)]
        self.codes = [p.wait(timeout=600) for p in ranks]
        for log in logs:
            log.seek(0)
        self.stderr = logs[0].read()  # rank 0 logs for the run
        for log in logs:
            log.close()

    @property
    def status(self) -> int | list[int]:
        return self.codes[0] if len(set(self.codes)) == 1 else self.codes


def run_2_1_2(run, inputs, **mode):
    """2 ranks, stopped at step 7; 1 rank, stopped at step 15; 2 ranks to the end."""
    plan = [(2, "usr2@step:7"), (1, "term@step:15"), (2, "")]
    allocs = [Allocation(flags(run, inputs, **mode), f, p, run.parent) for p, f in plan]
    for a in allocs:
        assert a.status in (0, 75), a.stderr[-3000:]
    assert [a.status for a in allocs] == [75, 75, 0]
    return allocs


def assert_same_run(run, straight):
    a, b = trace(run), trace(straight)
    assert sorted(a["ids"]) == list(range(1, STEPS + 1))
    assert a["ids"] == b["ids"]                      # the same global batches, step by step
    assert a["lr"] == b["lr"]                        # LR is a function of budget progress: exact
    assert a["marker"] == b["marker"] and sorted(a["marker"]) == [0.3, 0.6]
    assert a["validation"].keys() == b["validation"].keys() and len(a["validation"]) >= 3
    for step, (progress, loss) in a["validation"].items():
        assert progress == b["validation"][step][0]
        assert loss == pytest.approx(b["validation"][step][1], rel=LOSS_RTOL)
    for step, loss in a["loss"].items():
        assert loss == pytest.approx(b["loss"][step], rel=LOSS_RTOL)
    wa, wb = final_weights(run), final_weights(straight)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= WEIGHT_ATOL, worst
    led = Ledger.load(str(run))
    assert [a.world_size for a in led.allocations] == [2, 1, 2]
    assert [a.end_reason for a in led.allocations] == ["timeout", "preempted", "budget_done"]
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 1])
def test_two_ranks_then_one_then_two_is_the_uninterrupted_two_rank_run(tmp_path, inputs, zero_stage):
    straight = tmp_path / "straight"
    r = Allocation(flags(straight, inputs, zero_stage=zero_stage), "", 2, tmp_path)
    assert r.status == 0, r.stderr[-3000:]
    run = tmp_path / "elastic"
    codes = run_2_1_2(run, inputs, zero_stage=zero_stage)
    assert "saved on 2 ranks" in codes[1].stderr and "world size 1" in codes[1].stderr
    assert "batch 16 = 4 micro x 4 accum x 1 ranks" in codes[1].stderr
    worst = assert_same_run(run, straight)
    print(f"zero {zero_stage}: max |weight difference| after 2 -> 1 -> 2 ranks: {worst:.3g}")
    # a world size that does not divide the global batch: one line, before any training, checkpoint kept
    before = sorted(os.listdir(run / "checkpoints"))
    r = Allocation(flags(run, inputs, zero_stage=zero_stage, total_training_time=2 * HOURS,
                         allow_budget_change="true"), "", 3, tmp_path)
    assert r.status == 2 and "with micro batch 4 run on 1, 2, 4 ranks" in r.stderr.strip().splitlines()[-1]
    assert sorted(os.listdir(run / "checkpoints")) == before


class RunsCode:
    """A pickle that would run a shell command when loaded with weights_only=False."""

    def __init__(self, proof: str):
        self.proof = proof

    def __reduce__(self):
        return (os.system, (f"touch {self.proof}",))


@pytest.mark.slow
def test_a_tampered_state_file_fails_with_one_line_and_runs_no_code(tmp_path, inputs):
    run = tmp_path / "run"
    r = train(flags(run, inputs, do_validation="false", finetune_time_markers=""),
              {"HPC_BERT_FAULTS": "usr2@step:3"})
    assert r.returncode == 75, r.stderr[-3000:]
    tag = json.load(open(run / "checkpoints" / "latest.json"))["tag"]
    clean = tmp_path / "clean"
    shutil.copytree(run, clean)
    for name in ("rank_0_state.pt", "mp_rank_00_model_states.pt"):
        shutil.rmtree(run)
        shutil.copytree(clean, run)
        proof = tmp_path / f"code_ran_{name}"
        torch.save({"rng": RunsCode(str(proof)), "loader": {}}, run / "checkpoints" / tag / name)
        r = train(flags(run, inputs, do_validation="false", finetune_time_markers=""))
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert name in last and "is not plain checkpoint data and was not loaded" in last
        assert "move its checkpoint folder aside" in last
        assert not proof.exists()  # the payload never ran
        assert (run / "checkpoints" / tag / name).exists()  # and nothing was deleted or overwritten
