"""Budget changes, decided without a model: the WSD plan in seconds and ``budget_change.decide``."""
import math

import pytest
from hypothesis import given, strategies as st

from hpc_bert.config.pretrain import PretrainConfig, ScheduleConfig
from hpc_bert.errors import ConfigError, UserError
from hpc_bert.pretrain import budget_change as BC
from hpc_bert.pretrain import schedule as S

H = 3600.0


def plan(budget_s=100 * H, warmup_s=6 * H, decay_proportion=0.2, shape="linear"):
    return S.WsdPlan.fresh(budget_s, 0.0, decay_proportion, shape, warmup_s=warmup_s)


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_wsd_warms_up_holds_then_decays_to_zero(shape):
    p = plan(shape=shape)
    assert p.multiplier(0) == 0 and p.multiplier(3 * H) == 0.5 and p.multiplier(6 * H) == 1.0
    assert p.multiplier(50 * H) == 1.0 and p.multiplier(80 * H) == 1.0   # the decay starts at 80 h
    assert p.multiplier(100 * H) == 0.0 and p.multiplier(120 * H) == 0.0
    xs = [80 * H + i * 20 * H / 50 for i in range(51)]
    lrs = [p.multiplier(x) for x in xs]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == 0.0
    assert p.multiplier(90 * H) == pytest.approx({"linear": 0.5, "cosine": 0.5, "sqrt": 1 - math.sqrt(0.5)}[shape])


@given(b=st.floats(1, 100), factor=st.floats(1.0, 4.0), t=st.floats(0, 1))
def test_a_longer_budget_agrees_before_the_shorter_ones_decay(b, factor, t):
    short, long = plan(b * H, 0.05 * b * H), plan(b * factor * H, 0.05 * b * H)
    e = t * short.decay_start_s
    assert short.multiplier(e) == long.multiplier(e)


def test_wsd_config_checks():
    with pytest.raises(ConfigError, match="--curve wsd is a schedule in time"):
        ScheduleConfig(curve="wsd", lr_schedule="step", max_steps=10)
    with pytest.raises(ConfigError, match="exceed the budget"):
        ScheduleConfig(curve="wsd", warmup_proportion=0.5, decay_proportion=0.6)
    with pytest.raises(ConfigError, match="--decay_proportion"):
        ScheduleConfig(curve="wsd", decay_proportion=1.0)


def test_schedule_table_shows_the_decay_start():
    cfg = PretrainConfig(schedule=ScheduleConfig(curve="wsd", total_training_time=10, warmup_proportion=0.1,
                                                 decay_proportion=0.2))
    rows = S.schedule_table(cfg, 11)
    assert [round(r["lr_multiplier"], 6) for r in rows] == [0, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0]
    assert any("decay starts" in e for e in rows[8]["events"])


# ---- decide: checkpoint metas in, where to resume out ------------------------------------

def cfg_for(hours, curve="wsd", allow=False, decay_proportion=0.2):
    c = PretrainConfig(schedule=ScheduleConfig(curve=curve, total_training_time=hours, warmup_proportion=0.06,
                                               decay_proportion=decay_proportion))
    c.checkpoint.allow_budget_change = allow
    return c


def meta(step, elapsed_h, budget_h=100, pinned=False, wsd=True, **plan_over):
    p = {**plan(budget_h * H).to_dict(), **plan_over}
    m = {"tag": f"step_{step:09d}", "step": step, "elapsed_s": elapsed_h * H, "budget_s": budget_h * H}
    if wsd:
        m["wsd"] = p
    if pinned:
        m["pinned"] = BC.PINNED
    return m


def test_same_budget_keeps_the_stored_plan():
    r = BC.decide(meta(5, 50), [meta(5, 50)], cfg_for(100))
    assert r.change is None and r.plan.decay_start_s == 80 * H and r.plan.warmup_s == 6 * H


def test_extension_in_the_stable_phase_resumes_the_newest_checkpoint():
    newest = meta(5, 50)
    r = BC.decide(newest, [meta(3, 30), newest], cfg_for(200))
    assert r.meta is newest and not r.abandoned and r.change["kind"] == "new_schedule"
    assert r.plan == S.WsdPlan(6 * H, 160 * H, 200 * H, 1.0, "linear")   # the warmup keeps its seconds


def test_extension_after_the_decay_restarts_from_the_decay_start_checkpoint():
    start, later, done = meta(8, 80.5, pinned=True), meta(9, 90), meta(10, 100)
    r = BC.decide(done, [meta(7, 70), start, later, done], cfg_for(200))
    assert r.meta is start and r.abandoned == (later["tag"], done["tag"])
    assert r.change["kind"] == "restart_decay" and r.change["abandoned_s"] == pytest.approx(19.5 * H)
    assert r.plan.decay_start_s == 160 * H and r.plan.decay_from == 1.0


def test_end_brought_forward_before_its_decay_start_applies_the_new_schedule():
    r = BC.decide(meta(5, 50), [meta(5, 50)], cfg_for(70))   # new decay start 56 h, still ahead
    assert r.plan.decay_start_s == 56 * H and r.plan.end_s == 70 * H and not r.decay_started


@pytest.mark.parametrize("elapsed_h, new_h, current", [(60, 70, 1.0), (90, 95, 0.5)])
def test_end_brought_forward_past_its_decay_start_decays_from_the_current_lr(elapsed_h, new_h, current):
    newest = meta(9, elapsed_h)
    r = BC.decide(newest, [meta(8, 80.5, pinned=True), newest] if elapsed_h > 80 else [newest], cfg_for(new_h))
    assert r.meta is newest and r.decay_started and r.change["kind"] == "decay_from_current_lr"
    assert r.plan.decay_start_s == elapsed_h * H and r.plan.end_s == new_h * H
    assert r.plan.decay_from == pytest.approx(current)
    assert r.pin == (elapsed_h < 80)  # a stable checkpoint becomes the decay start


def test_refusals_are_one_line():
    with pytest.raises(UserError, match=r"50 h \(180000 s\) of training was already spent") as e:
        BC.decide(meta(5, 50), [meta(5, 50)], cfg_for(40))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="only a --curve wsd run can change its budget") as e:
        BC.decide(meta(5, 50, wsd=False), [], cfg_for(200, curve="linear"))
    assert "\n" not in str(e.value)
    r = BC.decide(meta(5, 50, wsd=False), [], cfg_for(200, curve="linear", allow=True))
    assert r.change["kind"] == "lr_jump" and r.plan is None
