"""What the user reads after a bad input or a fault: every bad input of one command on its own
line, an allocation too short to make progress refused with its minimum, and the ledger's
account of a cancel, a requeue and a resubmission (status prints it)."""
import subprocess
import sys

import pytest

from hpc_bert.end_reason import EndReason
from hpc_bert.errors import EXIT_REQUEUE, UserError
from hpc_bert.launch.allocations import MIN_TRAIN_S, STARTUP_GUESS_S, check_allocation_long_enough
from hpc_bert.launch.submit import plan
from hpc_bert.pretrain.clock import BudgetClock, Ledger
from pretrain_fixtures import REPO, vocab_and_shards


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def error_lines(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert all(x.startswith("hpc_bert: error: ") for x in lines), stderr
    return lines


def test_submit_lists_every_bad_input_one_line_each(tmp_path):
    r = run("hpc_bert.submit", "--cluster", "local", "--budget", "-1", "--allocation_hours", "0", "--nodes", "0",
            "--lr", "abc", "--bogus_flag", "1", "--run_dir", str(tmp_path / "run"))
    assert r.returncode == 2
    lines = error_lines(r.stderr)
    assert len(lines) == 5, r.stderr
    for what in ("--budget must be a positive", "--allocation_hours must be > 0", "--nodes must be >= 1",
                 "--lr expects float, got 'abc'", "unknown flag --bogus_flag"):
        assert sum(what in x for x in lines) == 1, (what, r.stderr)
    assert not (tmp_path / "run").exists()


def test_train_lists_every_bad_input_one_line_each(tmp_path):
    r = run("hpc_bert.train", "--lr", "abc", "--hidden_size", "x", "--fp16", "--bf16", "--zero_stage", "7",
            "--output_dir", str(tmp_path / "run"))
    assert r.returncode == 2
    lines = error_lines(r.stderr)
    assert [any(w in x for x in lines) for w in ("--lr expects float", "--hidden_size expects int")] == [True, True]
    r = run("hpc_bert.train", "--fp16", "--bf16", "--lr_schedule", "nope", "--total_training_time", "-2",
            "--warmup_proportion", "3")
    lines = error_lines(r.stderr)
    assert len(lines) == 4 and r.returncode == 2, r.stderr  # three of them in one section
    for what in ("--fp16 and --bf16", "--lr_schedule 'nope'", "--total_training_time must be a positive",
                 "--warmup_proportion must lie in"):
        assert sum(what in x for x in lines) == 1, (what, r.stderr)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    return vocab_and_shards(tmp_path_factory.mktemp("inputs"), per_shard=16)


def submit_argv(tmp_path, inputs, hours):
    shards, vocab = inputs
    return ["--cluster", "local", "--budget", "0.001", "--allocation_hours", str(hours), "--run_dir",
            str(tmp_path / "run"), "--dataset_path", shards, "--tokenizer_name", vocab, "--hidden_size", "32",
            "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64"]


def test_allocation_too_short_is_refused_with_its_minimum(tmp_path, tiny_inputs):
    r = run("hpc_bert.submit", *submit_argv(tmp_path, tiny_inputs, 0.005))
    assert r.returncode == 2
    (line,) = error_lines(r.stderr)
    assert "--allocation_hours 0.005 (18 s) is too short to start" in line and "or more" in line
    minimum = float(line.split("pass --allocation_hours ")[1].split()[0])
    assert (STARTUP_GUESS_S + MIN_TRAIN_S) / 3600 <= minimum <= 0.02
    assert plan(submit_argv(tmp_path, tiny_inputs, minimum)).sub.allocation_hours == minimum  # the minimum is enough
    assert not (tmp_path / "run").exists()


def test_the_minimum_grows_with_the_save_and_the_startup():
    check_allocation_long_enough(0.1, save_s=10, startup_s=60)
    with pytest.raises(UserError, match=r"\(~120 s\).*\(~100.0 s, twice\): pass --allocation_hours 0.098 or more"):
        check_allocation_long_enough(0.05, save_s=100, startup_s=120)


def test_cancelled_ends_the_job_without_a_requeue():
    assert EndReason.CANCELLED.exit_status == 0 and not EndReason.CANCELLED.finished
    assert EndReason.TIMEOUT.exit_status == EXIT_REQUEUE


def allocation(led, job_id, restart, elapsed0, elapsed1, reason, now):
    led.begin_allocation(resumed_elapsed_s=elapsed0, step=int(elapsed0), startup_s=1.0, job_id=job_id,
                         restart_count=restart)
    clock = BudgetClock(led.budget_s, resumed_elapsed_s=elapsed0, now=lambda: now[0])
    clock.start()
    now[0] += elapsed1 - elapsed0
    led.end_allocation(clock, int(elapsed1), reason)


def test_ledger_tells_a_cancel_a_requeue_and_a_resubmission_apart(tmp_path):
    now = [0.0]
    led = Ledger(str(tmp_path), budget_s=100)
    allocation(led, "41", 0, 0, 20, "preempted", now)     # SLURM requeues job 41
    allocation(led, "41", 1, 20, 35, "timeout", now)      # submit --cancel: the trainer saved on USR2 ...
    led.mark_cancelled()                                  # ... and the job recorded the cancel
    again = Ledger.load(str(tmp_path))
    assert again.current.end_reason == "cancelled"
    assert again.totals()["requeues"] == 1 and again.totals()["resubmissions"] == 0
    assert not again.totals()["done"]
    allocation(again, "57", 0, 35, 100, "budget_done", now)  # the same submit command, a new job
    t = Ledger.load(str(tmp_path)).totals()
    assert (t["requeues"], t["resubmissions"], t["allocations"], t["done"]) == (1, 1, 3, True)
    again.mark_cancelled()  # a cancel that arrives after the budget was spent changes nothing
    assert Ledger.load(str(tmp_path)).current.end_reason == "budget_done"


def test_status_says_cancelled_and_counts_resubmissions(tmp_path):
    now = [0.0]
    led = Ledger(str(tmp_path), budget_s=100)
    allocation(led, "41", 0, 0, 20, "timeout", now)
    led.mark_cancelled()
    out = run("hpc_bert.status", str(tmp_path)).stdout
    assert "allocations 1, requeues 0; cancelled by submit --cancel" in out, out
    allocation(led, "57", 0, 20, 30, "timeout", now)
    out = run("hpc_bert.status", str(tmp_path)).stdout
    assert "allocations 2, requeues 0, resubmissions 1; not done" in out, out
