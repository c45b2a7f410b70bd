"""Budget changes end to end: a real tiny BERT, --curve wsd, the simulated clock.

A WSD run with budget B extended to 2B (after it finished, or while still stable) ends bit for
bit where a run configured with 2B from the start ends, when that run's warmup has the same
length in seconds: the decay-start checkpoint is the state of any longer run at that moment.
"""
import json
import os

import pytest

from hpc_bert.launch.status import plot, render
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import simulated_flags, train
from test_train import assert_same_weights

pytestmark = pytest.mark.slow

STEP_S = 10.0
STEPS = 24                        # budget B: 24 steps of 10 simulated seconds
HOURS = STEPS * STEP_S / 3600
# warmup 0.125 of B = 30 s (3 steps); the 2B reference warms up over 0.0625 of 2B = the same 30 s.
# Both are powers of two times the budget, so the seconds are the same float. The decay takes the
# last quarter: from 180 s (step 18) under B, from 360 s (step 36) under 2B.
WSD = dict(curve="wsd", decay_proportion=0.25, finetune_checkpoint_at_end="true")


def flags(run_dir, inputs, hours=HOURS, warmup=0.125, **over):
    return simulated_flags(run_dir, inputs, hours, STEP_S, warmup_proportion=warmup, **{**WSD, **over})


def steps(run_dir) -> dict:
    """Per step: (LR, loss, the batch's sample ids); a later allocation wins a step seen twice."""
    return {e["step"]: (e["lr"], e["loss"], e["batch_ids"]) for e in read_events(str(run_dir)) if e["event"] == "train"}


def run_ok(f, **kw):
    r = train(f, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def reference(tmp_path_factory, inputs):
    """Budget 2B from the start, warmup 30 s."""
    run = tmp_path_factory.mktemp("reference")
    run_ok(flags(run, inputs, hours=2 * HOURS, warmup=0.0625))
    return run


def test_reference_holds_the_peak_and_pins_its_decay_start(reference, tmp_path):
    t = steps(reference)
    lrs = [t[s][0] for s in range(1, 2 * STEPS + 1)]
    peak = 3e-3
    assert lrs[:4] == [0.0, peak / 3, 2 * peak / 3, peak]             # warmup 30 s = 3 steps
    assert set(lrs[3:36]) == {peak}                                     # stable until 360 s
    assert all(a >= b for a, b in zip(lrs[36:], lrs[37:])) and lrs[-1] < peak / 10
    # the decay-start checkpoint outlives the keep-2 rotation and is in the ledger
    assert os.path.isdir(reference / "checkpoints" / "step_000000036")
    meta = json.load(open(reference / "checkpoints" / "step_000000036" / "meta.json"))
    assert meta["pinned"] == "decay_start"
    led = Ledger.load(str(reference))
    assert [c["tag"] for c in led.decay_start_checkpoints] == ["step_000000036"]
    assert led.warmup_s == pytest.approx(30.0)
    text = render(str(reference))
    assert "wsd: warmup 30 s; decay-start checkpoints: step_000000036 at 360 s" in text
    plot(str(reference), str(tmp_path / "lr.png"))   # the plot marks the decay start
    assert os.path.getsize(tmp_path / "lr.png") > 1000


def test_extension_after_finishing_is_bitwise_equal_to_the_longer_run(tmp_path, inputs, reference):
    run = tmp_path / "extended"
    run_ok(flags(run, inputs))
    first_final = json.load(open(run / "finetune_checkpoints" / "final" / "hpc_bert_meta.json"))
    assert first_final["step"] == STEPS
    r = run_ok(flags(run, inputs, hours=2 * HOURS))
    assert "(restart_decay): resuming step_000000018" in r.stderr
    assert_same_weights(run, reference)
    assert steps(run) == steps(reference)                                # LR, loss and batch ids per step
    led = Ledger.load(str(run))
    assert led.budget_s == pytest.approx(2 * STEPS * STEP_S) and led.warmup_s == Ledger.load(str(reference)).warmup_s
    (change,) = led.budget_changes
    assert change["kind"] == "restart_decay" and change["from_tag"] == "step_000000018"
    assert change["abandoned"] == ["step_000000024"] and change["abandoned_s"] == pytest.approx(60.0)
    assert led.totals()["abandoned_s"] == pytest.approx(60.0) and led.totals()["lost_s"] == 0
    assert [c["tag"] for c in led.decay_start_checkpoints] == ["step_000000018", "step_000000036"]
    # the abandoned decay is kept for reference, never resumed from
    assert os.listdir(run / "abandoned_checkpoints" / "budget_0.06667h") == ["step_000000024"]
    # markers and the final model of the old budget keep their files under the old budget's name
    names = set(os.listdir(run / "finetune_checkpoints"))
    assert names == {"final", "marker_0.3", "marker_0.6", "final_budget_0.06667h", "marker_0.3_budget_0.06667h",
                     "marker_0.6_budget_0.06667h"}
    assert json.load(open(run / "finetune_checkpoints" / "final" / "hpc_bert_meta.json"))["step"] == 2 * STEPS
    text = render(str(run))
    assert "budget changes:" in text and "0.06667 h -> 0.1333 h" in text and "abandoned 60 s" in text


def test_extension_in_the_stable_phase_is_bitwise_equal_to_the_longer_run(tmp_path, inputs, reference):
    run = tmp_path / "stable"
    r = train(flags(run, inputs), env_extra={"HPC_BERT_FAULTS": "usr2@step:13"})
    assert r.returncode == 75, r.stderr[-3000:]
    run_ok(flags(run, inputs, hours=2 * HOURS))
    assert_same_weights(run, reference)
    assert steps(run) == steps(reference)
    (change,) = Ledger.load(str(run)).budget_changes
    assert change["kind"] == "new_schedule" and change["from_tag"] == "step_000000013"
    assert not (run / "abandoned_checkpoints").exists()


def test_end_brought_forward_past_the_decay_start_decays_from_the_current_lr(tmp_path, inputs):
    run = tmp_path / "forward"
    r = train(flags(run, inputs, hours=2 * HOURS, warmup=0.0625), env_extra={"HPC_BERT_FAULTS": "usr2@step:40"})
    assert r.returncode == 75, r.stderr[-3000:]
    new_steps = 44   # 440 s: the new decay start (330 s) has passed; 400 s were spent
    run_ok(flags(run, inputs, hours=new_steps * STEP_S / 3600, warmup=0.0625))
    t = steps(run)
    lrs = [t[s][0] for s in range(40, new_steps + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] < 3e-3 and lrs[-1] <= lrs[0] / 4 + 1e-12           # the last step is within one step of 0
    led = Ledger.load(str(run))
    assert led.current.end_reason == "budget_done" and led.current.elapsed_last_s == pytest.approx(440.0)
    (change,) = led.budget_changes
    assert change["kind"] == "decay_from_current_lr" and change["from_tag"] == "step_000000040"


def test_budget_below_spent_is_refused_and_changes_nothing(tmp_path, inputs, reference):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(reference, run)

    def snapshot():
        return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
                for d, _, fs in os.walk(run) for f in fs if not f.startswith(".hpc_bert.lock")}
    before = snapshot()
    r = train(flags(run, inputs, hours=HOURS / 2, warmup=0.0625))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "0.1333 h (480 s) of training was already spent" in lines[0], r.stderr
    assert snapshot() == before


def test_two_ranks_extension_after_finishing_is_bitwise_equal(tmp_path, inputs):
    two = dict(train_micro_batch_size_per_gpu=4, do_validation="false", finetune_time_markers="")
    ref, run = tmp_path / "ref2", tmp_path / "ext2"
    run_ok(flags(ref, inputs, hours=2 * HOURS, warmup=0.0625, **two), procs=2, timeout=600)
    run_ok(flags(run, inputs, **two), procs=2, timeout=600)
    run_ok(flags(run, inputs, hours=2 * HOURS, **two), procs=2, timeout=600)
    assert_same_weights(run, ref)
    assert steps(run) == steps(ref)
    assert Ledger.load(str(run)).budget_changes[0]["kind"] == "restart_decay"
