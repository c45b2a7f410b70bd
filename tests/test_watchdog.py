"""The hang watchdog's timeouts and its alarm, in-process; the background save's host copy."""
import threading

import pytest
import torch

from hpc_bert.pretrain import watchdog as wd
from hpc_bert.pretrain.async_save import host_copy
from hpc_bert.pretrain.watchdog import HangDetected, HangWatchdog


def test_auto_timeout_is_a_multiple_of_the_slowest_step_with_a_floor(tmp_path):
    w = HangWatchdog(str(tmp_path), 0, "job")
    try:
        w.step_boundary(0.0)
        assert w.armed_s == wd.AUTO_FLOOR_S
        w.step_boundary(10.0)
        assert w.armed_s == wd.AUTO_FLOOR_S
        w.step_boundary(50.0)
        w.step_boundary(1.0)  # the slowest step seen counts
        assert w.armed_s == wd.AUTO_MULTIPLE * 50.0
        with w.phase("validation"):  # never seen: the phase floor
            assert w.armed_s == wd.PHASE_FLOOR_S
        assert w.armed_s == wd.AUTO_MULTIPLE * 50.0  # back to the step timeout
        w.slowest_phase_s["validation"] = 1000.0
        with w.phase("validation"):  # seen: a multiple of the slowest one
            assert w.armed_s == wd.PHASE_MULTIPLE * 1000.0
    finally:
        w.close()
    assert not (tmp_path / "hang_stacks").exists()  # no hang: no stacks file left behind


def test_a_hang_in_python_writes_every_threads_stack_and_raises_in_the_main_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(wd, "PG_MARGIN_S", 0.5)
    w = HangWatchdog(str(tmp_path), 0, "job", timeout_s=1.0)
    helper = threading.Thread(target=threading.Event().wait, args=(5,), name="a-helper", daemon=True)
    helper.start()
    try:
        w.step_boundary(0.1)
        with pytest.raises(HangDetected):
            threading.Event().wait(30)  # a step that never completes
        assert w.expired()
    finally:
        w.close()
    stacks = open(w.path).read()
    assert stacks.count("Thread 0x") >= 2 and "test_watchdog.py" in stacks, stacks


def test_host_copy_is_independent_of_the_training_state():
    w = torch.ones(4)
    state = {"module": {"w": w}, "opt": [{"step": 3, "exp_avg": w * 2}], "scale": 2.0}
    copy = host_copy(state)
    w.add_(1)
    state["opt"][0]["exp_avg"].zero_()
    state["opt"][0]["step"] = 4
    assert torch.equal(copy["module"]["w"], torch.ones(4)) and torch.equal(copy["opt"][0]["exp_avg"], torch.full((4,), 2.0))
    assert copy["opt"][0]["step"] == 3 and copy["scale"] == 2.0


def test_host_buffers_are_reused_save_after_save_and_hold_each_saves_values():
    buffers = {}
    w = torch.arange(6.0)
    first = host_copy({"module": {"w": w}}, buffers, ("f.pt",))
    assert torch.equal(first["module"]["w"], torch.arange(6.0))
    w.mul_(2)
    second = host_copy({"module": {"w": w}}, buffers, ("f.pt",))
    assert second["module"]["w"].data_ptr() == first["module"]["w"].data_ptr()  # the same host buffer
    assert torch.equal(second["module"]["w"], torch.arange(6.0) * 2) and second["module"]["w"].data_ptr() != w.data_ptr()
