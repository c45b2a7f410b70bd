"""Chaos: many faults at random points of one tiny simulated-clock run, which must end exactly
as the uninterrupted run does.

Faults (hpc_bert.pretrain.faults, real signals through the real handlers): kill -9 after a
step, in the middle of a checkpoint write (periodic saves are written in the background, stop
saves block), in the middle of a ledger write; SIGUSR2 or SIGTERM twice in a row; a signal
during a validation; a signal right after a fine-tune marker; a hang (the process blocks for
good after a step: the hang watchdog must end it with the requeue status); a full disk (No
space left on device in the middle of a background checkpoint write or of a ledger write);
kill -9 in the middle of the next periodic (background) save, whose lost work is checked
against the interval plus one step. After each fault the run is started again and resumes
from what it left on disk.
Checked at the end, against an uninterrupted run of the same flags:
  - every checkpoint a restart loaded (the newest complete one) holds the weights the
    uninterrupted run had at that step, bit for bit (a corrupt / torn load counts as one);
  - final weights bitwise equal, the same per-step batch ids, LR and loss;
  - the ledger adds up: summed over allocations, budget elapsed advanced minus lost seconds
    equals the final elapsed (= the budget), totals equal the allocations' sums, and no
    allocation is recorded twice (one record per process at most, job ids unique);
  - every fine-tune marker was written exactly once, at the uninterrupted run's step;
  - a kill during a background save loses at most the save interval plus one step (the
    ledger's lost seconds of that allocation).

    python bench/chaos.py [--faults 50] [--seed 0] [--steps 60]

Prints one line per fault and a summary; exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, REPO)
from pretrain_fixtures import tiny_flags, vocab_and_shards  # noqa: E402

from hpc_bert.pretrain.checkpoint import checkpoints_dir, find_latest, safe_load  # noqa: E402
from hpc_bert.pretrain.clock import Ledger  # noqa: E402
from hpc_bert.pretrain.events import read_events  # noqa: E402

STEP_S = 10.0
SAVE_EVERY = 3          # steps between periodic checkpoints (checkpoint_every_minutes below)
EPOCH_STEPS = 5         # 80 samples / global batch 16
MARKERS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)
HANG_TIMEOUT_S = 8     # a tiny step takes well under a second even on a loaded machine
KINDS = ("kill@step", "kill@save", "kill@ledger", "usr2 twice", "term twice", "signal in validation",
         "signal after marker", "hang", "full disk", "kill in async save")
END_REASONS = {"hang": "hang", "full disk": "disk_full"}  # faults that end with the requeue status


def run_flags(run_dir: str, inputs, steps: int, every_step_saved: bool = False) -> list[str]:
    data, vocab = inputs
    return tiny_flags(run_dir, data, vocab, steps * STEP_S / 3600, clock="simulated",
                      simulated_step_seconds=STEP_S, finetune_time_markers=",".join(map(str, MARKERS)),
                      finetune_checkpoint_at_end="true", do_validation="true", validation_epochs=1,
                      checkpoint_every_minutes=(STEP_S if every_step_saved else SAVE_EVERY * STEP_S) / 60,
                      keep_checkpoints=10 ** 6 if every_step_saved else 2, num_workers=1,
                      hang_timeout_s=HANG_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as s:  # the process group's port: other runs on the machine may hold the default
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(flags: list[str], faults: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HPC_BERT_FAULTS=faults,
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hpc_bert.train", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def module_weights(run_dir: str, tag: str) -> dict:
    return safe_load(os.path.join(checkpoints_dir(run_dir), tag, "mp_rank_00_model_states.pt"),
                     deepspeed_types=True)["module"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def plan_fault(kind: str, step: int, epochs: int, markers: int, rng: random.Random) -> str:
    """A fault spec that fires in a process resuming at ``step``: candidates cover the next
    points of that kind, the first one reached fires; SIGINT 12 steps ahead is the backstop
    (its ledger end reason, "signal", tells it apart) so no process runs to the end unplanned."""
    return _planned(kind, step, epochs, markers, rng) + f",int@step:{step + 12}"


def _planned(kind: str, step: int, epochs: int, markers: int, rng: random.Random) -> str:
    ahead = [step + k for k in range(1, 7)]
    if kind == "kill@step":
        return f"kill@step:{step + rng.randint(1, 4)}"
    if kind == "kill@save":
        return ",".join(f"kill@save:{n}" for n in ahead)
    if kind == "kill@ledger":  # 1 is the allocation record itself, then one per step and per save
        return f"kill@ledger:{rng.randint(1, 6)}"
    if kind == "hang":
        return f"hang@step:{step + rng.randint(1, 4)}"
    if kind == "full disk":
        if rng.random() < 0.5:
            return ",".join(f"enospc@save:{n}" for n in ahead)
        return f"enospc@ledger:{rng.randint(2, 6)}"
    if kind == "kill in async save":  # the next periodic save: SAVE_EVERY steps after the one resumed from
        return f"kill@save:{step + SAVE_EVERY}"
    if kind in ("usr2 twice", "term twice"):
        sig, n = kind.split()[0], step + rng.randint(1, 4)
        return f"{sig}@step:{n},{sig}@step:{n}"
    sig = rng.choice(["usr2", "term"])
    if kind == "signal in validation":
        return ",".join(f"{sig}@validation:{e}" for e in range(epochs + 1, epochs + 3))
    return ",".join(f"{sig}@marker:{m}" for m in range(markers + 1, len(MARKERS) + 1))


def resume_point(run_dir: str) -> tuple[int, int, int, str | None]:
    meta = find_latest(run_dir)
    if meta is None:
        return 0, 0, 0, None
    ts = meta["train_state"]
    return meta["step"], ts["epochs_done"], len(ts["markers_done"]), meta["tag"]


def fired(kind: str, rc: int, run_dir: str) -> bool:
    if kind.startswith("kill"):
        return rc == -9
    reason = Ledger.load(run_dir).current.end_reason
    if kind in END_REASONS:
        return rc == 75 and reason == END_REASONS[kind]
    return rc == 75 and reason not in ("signal", *END_REASONS.values())  # not the backstop


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="the budget, in optimizer steps (default 3 per fault + 30: faults need steps ahead)")
    p.add_argument("--work_dir", default=None, help="keep the runs here (default: a temp dir)")
    args = p.parse_args(argv)
    args.steps = args.steps or 3 * args.faults + 30
    rng = random.Random(args.seed)
    root = args.work_dir or tempfile.mkdtemp(prefix="hpc_bert_chaos_")
    inputs = vocab_and_shards(os.path.join(root, "inputs"), per_shard=40)
    t0 = time.monotonic()

    reference = os.path.join(root, "uninterrupted")
    r = train(run_flags(reference, inputs, args.steps, every_step_saved=True))
    if r.returncode != 0:
        print(r.stderr[-3000:])
        return 1
    print(f"uninterrupted run: {args.steps} steps in {time.monotonic() - t0:.0f} s", flush=True)

    run = os.path.join(root, "chaos")
    flags = run_flags(run, inputs, args.steps)
    injected = resumes = corrupt = processes = unfired = 0
    per_kind = {k: 0 for k in KINDS}
    async_kills = []  # ledger index of each allocation killed during a background save
    while True:
        step, epochs, markers, tag = resume_point(run)
        if tag is not None:  # the checkpoint this restart will load must be the reference's, bit for bit
            try:
                ok = same_weights(module_weights(run, tag), module_weights(reference, tag))
            except Exception as e:  # noqa: BLE001 - any unreadable file is a corrupt checkpoint
                print(f"  {tag}: cannot be read: {e}")
                ok = False
            corrupt += not ok
        # a marker fault only when the next marker comes before the backstop
        near_marker = markers < len(MARKERS) and math.ceil(MARKERS[markers] * args.steps) - step <= 10
        kinds = [k for k in KINDS if k != "signal after marker" or near_marker]
        kind = rng.choice(kinds) if injected < args.faults and step < args.steps - 14 else None
        spec = plan_fault(kind, step, epochs, markers, rng) if kind else ""
        r = train(flags, spec)
        processes += 1
        resumes += tag is not None
        if kind and fired(kind, r.returncode, run):
            injected += 1
            per_kind[kind] += 1
            print(f"fault {injected:3d}: {kind:21s} {spec[:44]:44s} resumed at step {step:3d} -> rc {r.returncode}",
                  flush=True)
            if kind == "kill in async save":
                async_kills.append(len(Ledger.load(run).allocations) - 1)
        elif kind:
            unfired += 1
        if r.returncode == 0:
            break
        if r.returncode not in (75, -9):
            print(r.stderr[-3000:])
            return 1

    # ---- compare with the uninterrupted run --------------------------------------------------
    final_tag = find_latest(run)["tag"]
    bitwise = same_weights(module_weights(run, final_tag), module_weights(reference, final_tag))
    trace = {}
    for which in (run, reference):
        ev = read_events(which)
        trace[which] = {e["step"]: (e["batch_ids"], e["lr"], e["loss"]) for e in ev if e["event"] == "train"}
    same_trace = trace[run] == trace[reference]
    led, ref_led = Ledger.load(run), Ledger.load(reference)
    advanced = sum(a.elapsed_last_s - a.elapsed_begin_s - a.lost_s for a in led.allocations)
    totals = led.totals()
    sums_ok = all(abs(totals[k] - sum(getattr(a, k) for a in led.allocations)) < 1e-6
                  for k in ("train_s", "lost_s", "startup_s"))
    ids = [a.job_id for a in led.allocations]
    ledger_ok = (abs(advanced - ref_led.totals()["elapsed_s"]) < 1e-6 and sums_ok and len(set(ids)) == len(ids)
                 and len(ids) <= processes and led.current.end_reason == "budget_done"
                 and all(a.end_reason for a in led.allocations))
    markers_ok = True
    for name in sorted(os.listdir(os.path.join(reference, "finetune_checkpoints"))):
        mine = os.path.join(run, "finetune_checkpoints", name, "hpc_bert_meta.json")
        ref = os.path.join(reference, "finetune_checkpoints", name, "hpc_bert_meta.json")
        markers_ok &= os.path.exists(mine) and json.load(open(mine))["step"] == json.load(open(ref))["step"]
    markers_ok &= sorted(os.listdir(os.path.join(run, "finetune_checkpoints"))) == sorted(
        os.listdir(os.path.join(reference, "finetune_checkpoints")))

    print(f"\nfaults injected: {injected} ({', '.join(f'{k} {v}' for k, v in per_kind.items())}); "
          f"planned but not reached: {unfired}")
    print(f"processes: {processes}; resumes: {resumes}; allocations in the ledger: {len(ids)}")
    print(f"corrupt checkpoints loaded: {corrupt}")
    print(f"weights bitwise equal (same world size): {bitwise}; per-step batch ids / LR / loss equal: {same_trace}")
    print(f"ledger totals consistent: {ledger_ok} (elapsed advanced - lost = {advanced:.1f} s, budget "
          f"{led.budget_s:.1f} s; lost {totals['lost_s']:.1f} s; {len(ids)} allocations, {len(set(ids))} job ids)")
    print(f"markers exactly once: {markers_ok} ({len(MARKERS)} markers + final)")
    lost = [led.allocations[i].lost_s for i in async_kills]
    bound = SAVE_EVERY * STEP_S + STEP_S
    lost_ok = all(x <= bound + 1e-6 for x in lost)
    print(f"kill -9 during a background save: lost {', '.join(f'{x:g}' for x in lost) or 'nothing (none fired)'} s; "
          f"bound: interval {SAVE_EVERY * STEP_S:g} s + one step {STEP_S:g} s = {bound:g} s: {lost_ok}")
    print(f"wall: {time.monotonic() - t0:.0f} s")
    good = (injected >= args.faults and corrupt == 0 and bitwise and same_trace and ledger_ok and markers_ok
            and lost_ok)
    print("chaos: PASS" if good else "chaos: FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
