"""The schedule: pure functions of progress, continuous, exactly-once markers."""
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from hpc_bert.pretrain import schedule as S

CURVES = ["linear", "exp", "cosine", "constant"]
warmups = st.floats(min_value=0.0, max_value=0.95, allow_nan=False)
curves = st.sampled_from(CURVES)


@given(w=warmups.filter(lambda w: w > 1e-3), a=st.floats(0, 1), b=st.floats(0, 1), curve=curves)
def test_warmup_rises_monotonically(w, a, b, curve):
    lo, hi = sorted((a * w, b * w))
    assert S.lr_multiplier(lo, w, curve) <= S.lr_multiplier(hi, w, curve) + 1e-12


@given(w=warmups, curve=st.sampled_from(["linear", "exp", "cosine"]))
def test_lr_is_zero_at_budget_end(w, curve):
    assert abs(S.lr_multiplier(1.0, w, curve)) < 1e-12
    assert S.lr_multiplier(1.3, w, curve) == S.lr_multiplier(1.0, w, curve)  # clamped past the end


@given(w=warmups, curve=curves, p=st.floats(0, 1))
def test_multiplier_bounded(w, curve, p):
    assert 0.0 <= S.lr_multiplier(p, w, curve) <= 1.0 + 1e-12


@given(w=warmups, curve=curves, p=st.floats(0, 0.999))
def test_no_jump_anywhere(w, curve, p):
    """Lipschitz continuity: a tiny step in progress makes a tiny change in LR."""
    eps = 1e-7
    slope_bound = max(1.0 / w if w else 0.0, 5.0 / (1 - w)) * 1.01 + 1e-9  # steepest curve (exp)
    assert abs(S.lr_multiplier(p + eps, w, curve) - S.lr_multiplier(p, w, curve)) <= slope_bound * eps + 1e-12


@given(hours=st.floats(0.01, 48), w=warmups.filter(lambda w: w > 0), curve=curves)
def test_continuous_at_end_of_warmup_for_every_budget(hours, w, curve):
    """ABB's max(1, T - W) jumps for budgets under an hour; ours must not."""
    budget = hours * 3600
    at = w * budget
    lr = lambda e: S.learning_rate(1.0, "time", curve, w, e, budget)
    assert abs(lr(at) - 1.0) < 1e-9
    assert abs(lr(at * (1 - 1e-9)) - 1.0) < 1e-6
    assert abs(lr(at + 1e-6 * budget) - 1.0) <= 1e-6 * S.EXP_RATE / (1 - w) * 1.01  # steepest decay


def test_step_schedules():
    assert S.learning_rate(1.0, "step", "linear", 0.1, 0, 1, step=50, max_steps=100) == \
        S.lr_multiplier(0.5, 0.1, "linear")
    assert S.learning_rate(2.0, "constant_step", "linear", 0.1, 0, 1, step=5, max_steps=100) == 1.0
    assert S.learning_rate(2.0, "constant_step", "linear", 0.1, 0, 1, step=90, max_steps=100) == 2.0


def test_stop_reason():
    assert S.stop_reason(10, 100, None) is None
    assert S.stop_reason(100, 100, None) == "budget_done"
    assert S.stop_reason(50, 100, 50) == "early_exit"
    assert S.stop_reason(99, 100, 200) is None


def test_validation_cadence():
    kw = dict(epochs_begin=1, epochs_middle=3, epochs_end=2, begin_proportion=0.1, end_proportion=0.1)
    assert S.validation_due(1, 0.05, [], **kw)
    assert not S.validation_due(1, 0.05, [1], **kw)           # exactly once
    assert not S.validation_due(4, 0.5, [], **kw) and S.validation_due(6, 0.5, [], **kw)
    assert S.validation_due(8, 0.95, [], **kw) and not S.validation_due(7, 0.95, [], **kw)


@settings(max_examples=300)
@given(markers=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5, unique=True),
       steps=st.integers(5, 60),
       restarts=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=6))
def test_markers_exactly_once_under_any_restarts(markers, steps, restarts):
    """Simulate a run whose markers' HF dirs persist on disk and whose checkpoint carries
    ``done``; restarts roll back to an earlier checkpoint (crash) at arbitrary points."""
    on_disk: list[float] = []             # saved marker dirs survive crashes
    checkpoints = {0: frozenset()}         # step -> done set stored in the checkpoint
    crash_plan = {at: back for at, back in restarts if back < at}
    step, done = 0, set()
    crashes_left = len(crash_plan)
    while step < steps:
        step += 1
        progress = step / steps
        for m in S.markers_due(progress, markers, done | set(on_disk)):
            on_disk.append(m)
            done.add(m)
        if step % 3 == 0:
            checkpoints[step] = frozenset(done)
        if step in crash_plan and crashes_left:
            crashes_left -= 1
            target = crash_plan.pop(step)
            back = max(k for k in checkpoints if k <= target)
            step, done = back, set(checkpoints[back])
    assert sorted(on_disk) == sorted(markers)  # every marker once, none twice


def test_markers_due_returns_all_jumped_over():
    assert S.markers_due(0.8, [0.25, 0.5, 0.75], [0.25]) == [0.5, 0.75]
    assert S.markers_due(0.2, [0.25], []) == []


def test_early_stop():
    assert not S.early_stop(179 * 60, 7.0, 180, 6)
    assert S.early_stop(180 * 60, 7.0, 180, 6)
    assert not S.early_stop(200 * 60, 5.0, 180, 6)


def test_schedule_cli_table():
    r = subprocess.run([sys.executable, "-m", "hpc_bert.schedule", "--total_training_time", "24",
                        "--warmup_proportion", "0.06", "--curve", "linear", "--points", "9",
                        "--finetune_time_markers", "0.25,0.5", "--do_validation"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 10
    assert "marker 0.25" in lines[3] and "marker 0.5" in lines[5]
    assert lines[-1].split()[:3] == ["1.000", "24.000", "0.0000"] and "budget_done" in lines[-1]
    assert "warmup ends" in lines[2]
