"""The trainer end to end: a real tiny BERT trained with DeepSpeed on CPU (gloo).

The defining property: a run stopped by signals at several points (one during a
validation, one right after a fine-tune marker) and restarted each time ends with the
same weights, bit for bit, and the same LR / validation / marker trace as an uninterrupted
run, under the simulated clock.
"""
import json
import os

import pytest
import torch

from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import final_weights, simulated_flags, small_disk, tiny_flags, train

pytestmark = pytest.mark.slow

STEP_S = 10.0          # simulated seconds per optimizer step
STEPS = 24             # the budget is STEPS steps
HOURS = STEPS * STEP_S / 3600
# An epoch is one pass over all training samples (2 shards of 40 = 80 samples, the loader's global
# order) = 5 steps of 16, so epochs end in steps 5, 10, 15, 20 (validation_epochs 1 validates after
# each); markers 0.3 and 0.6 are reached at steps ceil(7.2) = 8 and ceil(14.4) = 15; periodic
# checkpoints every 1.5 simulated minutes = 9 steps, then one at the budget's end.
VALIDATION_STEPS = [5, 10, 15, 20]
MARKER_STEPS = {0.3: 8, 0.6: 15}
CHECKPOINTS = [(9, "periodic"), (18, "periodic"), (24, "budget_done")]


def flags(run_dir, inputs, **over):
    return simulated_flags(run_dir, inputs, HOURS, STEP_S, **{"finetune_checkpoint_at_end": "true", **over})


def trace(run_dir) -> dict:
    """Per-step LR and loss, validation points and markers; later allocations win duplicates."""
    ev = read_events(str(run_dir))
    return {"train": {e["step"]: (e["lr"], e["loss"]) for e in ev if e["event"] == "train"},
            "validation": {e["step"]: e["val_loss"] for e in ev if e["event"] == "validation"},
            "marker": {e["marker"]: e["step"] for e in ev if e["event"] == "marker"},
            "checkpoint": [(e["step"], e["reason"]) for e in ev if e["event"] == "checkpoint"]}


def assert_same_weights(a, b):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, inputs):
    run = tmp_path_factory.mktemp("uninterrupted")
    r = train(flags(run, inputs))
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_uninterrupted_run_follows_the_schedule(uninterrupted):
    led = Ledger.load(str(uninterrupted))
    assert len(led.allocations) == 1 and led.current.end_reason == "budget_done"
    assert led.current.step_last == STEPS
    t = trace(uninterrupted)
    assert sorted(t["train"]) == list(range(1, STEPS + 1))
    lrs = [t["train"][s][0] for s in range(1, STEPS + 1)]
    peak = max(lrs)
    assert lrs[0] == 0.0 and lrs.index(peak) <= 4          # warmup over 10% of the budget
    assert all(x >= y for x, y in zip(lrs[3:], lrs[4:]))    # then linear decay
    assert t["marker"] == MARKER_STEPS
    assert sorted(t["validation"]) == VALIDATION_STEPS
    assert t["checkpoint"] == CHECKPOINTS
    losses = [t["train"][s][1] for s in range(1, STEPS + 1)]
    assert sum(losses[-4:]) < sum(losses[:4])                # it learns
    names = sorted(os.listdir(os.path.join(uninterrupted, "finetune_checkpoints")))
    assert names == ["final", "marker_0.3", "marker_0.6"]


def test_resume_equivalence_under_signals(tmp_path, inputs, uninterrupted):
    run = tmp_path / "interrupted"
    # 1: SIGUSR2 mid-validation (epoch 1 = 80 samples = step 5); 2: SIGTERM right after the first
    # marker (step 8); 3, 4: SIGUSR2 / SIGINT at steps
    plan = ["usr2@validation:1", "term@marker:1", "usr2@step:13", "int@step:17"]
    stops = []
    for fault in plan + [""]:
        r = train(flags(run, inputs), env_extra={"HPC_BERT_FAULTS": fault})
        stops.append(r.returncode)
        assert r.returncode in (0, 75), r.stderr[-3000:]
        if r.returncode == 0:
            break
    assert stops[:4] == [75, 75, 75, 75] and stops[-1] == 0
    led = Ledger.load(str(run))
    assert [a.end_reason for a in led.allocations] == ["timeout", "preempted", "timeout", "signal", "budget_done"]
    assert sum(a.lost_s for a in led.allocations) == 0
    assert_same_weights(run, uninterrupted)
    a, b = trace(run), trace(uninterrupted)
    assert a["train"] == b["train"]
    assert a["validation"] == b["validation"] and sorted(a["validation"]) == VALIDATION_STEPS
    assert a["marker"] == b["marker"] == MARKER_STEPS


def test_kill9_resumes_from_last_complete_checkpoint_and_records_lost_time(tmp_path, inputs, uninterrupted):
    run = tmp_path / "killed"
    r = train(flags(run, inputs), env_extra={"HPC_BERT_FAULTS": "kill@step:17"})
    assert r.returncode == -9
    r = train(flags(run, inputs))
    assert r.returncode == 0, r.stderr[-3000:]
    led = Ledger.load(str(run))
    first = led.allocations[0]
    assert first.end_reason == "crash"
    # periodic checkpoints every 1.5 simulated minutes = 9 steps: step 9 was the newest before the kill;
    # the kill lands right after step 17's compute, before its boundary, so the ledger's last
    # heartbeat (every boundary at --print_steps 1) is step 16's
    assert first.lost_s == pytest.approx((16 - 9) * STEP_S)
    assert led.allocations[1].step_begin == 9
    assert_same_weights(run, uninterrupted)       # replaying the lost steps is exact too
    assert trace(run)["marker"] == trace(uninterrupted)["marker"]
    # markers were saved exactly once: the dirs carry the step they were written at
    for name, step in (("marker_0.3", 8), ("marker_0.6", 15)):
        meta = json.load(open(os.path.join(run, "finetune_checkpoints", name, "hpc_bert_meta.json")))
        assert meta["step"] == step


def test_fine_tune_marker_loads_for_classification(uninterrupted):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path = os.path.join(uninterrupted, "finetune_checkpoints", "marker_0.3")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(["w1 w2 w3", "w4 w5"], padding=True, return_tensors="pt")
    assert model(**enc).logits.shape == (2, 2)
    assert type(model).__name__ == "RobertaPreLayerNormForSequenceClassification"


def test_half_written_checkpoint_is_never_loaded(tmp_path, inputs, uninterrupted):
    run = tmp_path / "torn"
    r = train(flags(run, inputs, early_exit_time_marker=12 * STEP_S / 3600))
    assert r.returncode == 0, r.stderr[-3000:]
    ck = run / "checkpoints"
    newest = json.load(open(ck / "latest.json"))["tag"]
    # a torn save: the folder of a later step without meta.json, and a .partial folder
    (ck / "step_000000099").mkdir()
    (ck / "step_000000099" / "mp_rank_00_model_states.pt").write_bytes(b"garbage")
    (ck / "step_000000100.partial").mkdir()
    from hpc_bert.pretrain.checkpoint import find_latest
    assert find_latest(str(run))["tag"] == newest
    r = train(flags(run, inputs))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed {newest}" in r.stderr
    assert_same_weights(run, uninterrupted)
    assert not (ck / "step_000000100.partial").exists()


def test_kill_during_a_save_and_a_second_signal_during_a_save(tmp_path, inputs, uninterrupted):
    """kill -9 between writing a checkpoint and publishing it leaves a torn .partial folder that
    is never loaded; a second signal that lands during the stop-save changes nothing."""
    run = tmp_path / "torn_by_kill"
    r = train(flags(run, inputs), env_extra={"HPC_BERT_FAULTS": "kill@save:18"})  # the 2nd periodic save
    assert r.returncode == -9
    ck = run / "checkpoints"
    assert (ck / "step_000000018.partial").is_dir() and not (ck / "step_000000018").exists()
    assert json.load(open(ck / "latest.json"))["tag"] == "step_000000009"
    r = train(flags(run, inputs), env_extra={"HPC_BERT_FAULTS": "usr2@step:20,term@save:20"})
    assert r.returncode == 75, r.stderr[-3000:]
    assert "resumed step_000000009" in r.stderr
    assert json.load(open(ck / "latest.json"))["tag"] == "step_000000020"
    r = train(flags(run, inputs))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_weights(run, uninterrupted)
    assert not any(p.name.endswith(".partial") for p in ck.iterdir())


def test_early_exit_keeps_the_full_schedule(tmp_path, inputs, uninterrupted):
    run = tmp_path / "early_exit"
    r = train(flags(run, inputs, early_exit_time_marker=STEPS / 2 * STEP_S / 3600))
    assert r.returncode == 0, r.stderr[-3000:]
    assert Ledger.load(str(run)).current.end_reason == "early_exit"
    a, b = trace(run)["train"], trace(uninterrupted)["train"]
    assert max(a) == STEPS // 2 and all(a[s][0] == b[s][0] for s in a)  # same LR at the same progress


def test_early_stopping_on_validation_loss(tmp_path, inputs):
    run = tmp_path / "early_stop"
    r = train(flags(run, inputs, use_early_stopping="true", early_stop_time=0, early_stop_eval_loss=0.5))
    assert r.returncode == 0, r.stderr[-3000:]
    led = Ledger.load(str(run))
    # the first validation (after epoch 1, step 5) is already above 0.5: it stops there
    assert led.current.end_reason == "early_stop" and led.current.step_last == VALIDATION_STEPS[0]
    end = [e for e in read_events(str(run)) if e["event"] == "allocation_end"][-1]
    assert end["reason"] == "early_stop" and end["step"] == VALIDATION_STEPS[0]
    assert end["cause"].startswith("validation loss ")
    assert trace(run)["checkpoint"] == [(VALIDATION_STEPS[0], "early_stop")]
    assert os.path.isdir(os.path.join(run, "finetune_checkpoints", "final"))


def test_nan_loss_stops_with_one_clear_line_and_keeps_the_last_good_checkpoint(tmp_path, inputs, uninterrupted):
    run = tmp_path / "nan"
    r = train(flags(run, inputs), env_extra={"HPC_BERT_FAULTS": "usr2@step:6"})
    assert r.returncode == 75, r.stderr[-3000:]
    ck = run / "checkpoints"
    assert json.load(open(ck / "latest.json"))["tag"] == "step_000000006"
    good = final_weights(run)
    # resumed with an LR that blows up: a non-finite loss within a few steps, and no save of its weights
    r = train(flags(run, inputs, lr=1e12, gradient_clipping=0.0))
    assert r.returncode == 1
    assert "training diverged" in r.stderr and "the last good checkpoint is kept" in r.stderr
    assert Ledger.load(str(run)).current.end_reason == "error"
    err = [e for e in read_events(str(run)) if e["event"] == "error"][-1]
    assert err["step"] > 6
    assert sorted(p.name for p in ck.iterdir() if p.name.startswith("step_")) == ["step_000000006"]
    kept = final_weights(run)
    assert all(torch.equal(kept[k], good[k]) and torch.isfinite(kept[k].float()).all() for k in good)
    # and it is loadable: resuming with the original flags finishes the uninterrupted run's way
    r = train(flags(run, inputs))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed step_000000006" in r.stderr
    assert_same_weights(run, uninterrupted)


def test_resume_with_other_model_shape_or_budget_fails_clearly(tmp_path, inputs, uninterrupted):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    ck = sorted(os.listdir(run / "checkpoints"))
    before = {n: os.path.getmtime(run / "checkpoints" / n) for n in ck}
    r = train(flags(run, inputs, hidden_size=64))
    assert r.returncode == 2 and "model shape differs (hidden_size 32 -> 64)" in r.stderr
    r = train(flags(run, inputs, total_training_time=1.0))
    assert r.returncode == 2 and "--allow_budget_change" in r.stderr
    assert "only a --curve wsd run can change its budget" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert {n: os.path.getmtime(run / "checkpoints" / n) for n in sorted(os.listdir(run / "checkpoints"))} == before


def test_missing_dataset_fails_before_training(tmp_path, inputs):
    _, vocab = inputs
    r = train(tiny_flags(str(tmp_path / "run"), str(tmp_path / "nope"), vocab, HOURS))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_two_cpu_ranks_stay_in_sync(tmp_path, inputs):
    run = tmp_path / "ddp"
    r = train(flags(run, inputs, train_batch_size=16, train_micro_batch_size_per_gpu=4), procs=2, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    end = [e for e in read_events(str(run)) if e["event"] == "allocation_end"][-1]
    assert end["world_size"] == 2
    assert end["param_checksum_min"] == end["param_checksum_max"]
    # the saved loader state is global (one position for every rank); rebuilt from it at the start,
    # the two ranks read different samples of one epoch (80 samples = 10 rounds of 2 x 4) and agree
    # on each round's global sample ids
    from hpc_bert.data.loader import PretrainingDataLoader
    tag = json.load(open(run / "checkpoints" / "latest.json"))["tag"]
    state = torch.load(run / "checkpoints" / tag / "rank_0_state.pt", weights_only=True)["loader"]
    assert state["next_sample"] > 0
    rows, rounds = [], []
    for rank in (0, 1):
        loader = PretrainingDataLoader(inputs[0], micro_batch_size=4, rank=rank, world_size=2, seed=state["seed"], prefetch=1)
        loader.load_state_dict({**state, "next_sample": 0})
        batches = iter(loader)
        epoch = [next(batches) for _ in range(10)]
        rows.append({tuple(r.tolist()) for b in epoch for r in b.tensors["input_ids"]})
        rounds.append([b.round_sample_ids.tolist() for b in epoch])
    assert rounds[0] == rounds[1]
    assert len(rows[0]) >= 30 and len(rows[1]) >= 30 and not rows[0] & rows[1]


def test_bf16_autocast_with_zero1_resumes_bit_for_bit(tmp_path, inputs):
    """The precision and ZeRO paths keep the defining property: stop twice, same weights."""
    mode = dict(bf16="true", zero_stage=1, finetune_time_markers="", do_validation="false")
    straight = tmp_path / "straight"
    r = train(flags(straight, inputs, **mode))
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "stopped"
    codes = [train(flags(run, inputs, **mode), env_extra={"HPC_BERT_FAULTS": f}).returncode
             for f in ("usr2@step:7", "term@step:16", "")]
    assert codes == [75, 75, 0]
    assert_same_weights(run, straight)
    assert trace(run)["train"] == trace(straight)["train"]
    # autocast keeps fp32 weights; bf16 shows up in the loss, which differs from an fp32 run
    assert all(t.dtype == torch.float32 for t in final_weights(run).values() if t.is_floating_point())


def test_compile_on_cpu_resumes_bit_for_bit(tmp_path, inputs):
    """--compile on CPU: a run stopped twice ends with the same weights as a straight one, both
    compiled. A requeued allocation reads the compiled code back from the cache under the run
    dir (startup, not budget): it compiles faster than the first allocation."""
    mode = dict(compile="true", finetune_time_markers="", checkpoint_every_minutes=1000)
    straight = tmp_path / "straight"
    r = train(flags(straight, inputs, **mode), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--compile: compiled encoder and head + loss" in r.stderr
    run = tmp_path / "stopped"
    codes = [train(flags(run, inputs, **mode), env_extra={"HPC_BERT_FAULTS": f}, timeout=600).returncode
             for f in ("usr2@step:7", "term@step:16", "")]
    assert codes == [75, 75, 0]
    assert_same_weights(run, straight)
    assert trace(run)["train"] == trace(straight)["train"]
    assert (run / "compile_cache").is_dir()
    starts = [e for e in read_events(str(run)) if e["event"] == "allocation_start"]
    first, *requeued = [e["compile_s"] for e in starts]
    assert first > 0 and all(0 < c < first for c in requeued), [first, *requeued]
    led = Ledger.load(str(run))
    assert all(a.startup_s >= c for a, c in zip(led.allocations, [first, *requeued]))


def test_no_space_for_a_checkpoint_is_one_clear_line(tmp_path, inputs):
    with small_disk(tmp_path / "small_disk", "64k") as small:
        r = train(flags(small / "run", inputs))
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert "not enough space for a checkpoint" in last and "--output_dir" in last
        assert not (small / "run" / "checkpoints").exists()
