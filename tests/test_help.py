"""``--help`` of every entry point prints the flags with their defaults and exits 0.

Each runs as a user would (``python -m ...``, a fresh interpreter): nothing may be validated,
loaded or written before argparse sees ``--help``.
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (command line, a flag it must list, that flag's default as the help shows it)
ENTRY_POINTS = [
    (["hpc_bert.submit", "--help"], "--allocation_hours", "(default: auto)"),
    (["hpc_bert.submit", "-h"], "--requeue_margin", "(default: 3)"),
    (["hpc_bert.train", "--help"], "--zero_stage", "{0,1,2,3} (default: 0)"),
    (["hpc_bert.finetune", "--help"], "--learning_rate", "(default: 5e-05)"),
    (["hpc_bert.schedule", "--help"], "--warmup_proportion", "(default: 0.06)"),
    (["hpc_bert.sweep", "--help"], "--array_parallelism", "(default: 0)"),
    (["hpc_bert.status", "--help"], "--plot", "(default: None)"),
    (["hpc_bert.demo", "--help"], "--run_dir", "(default: runs/demo)"),
    (["hpc_bert.data", "--help"], "prepare", ""),
    (["hpc_bert.glue", "--help"], "aggregate RUN_DIR", ""),
    (["hpc_bert.runenv", "--help"], "exports", ""),
] + [(["hpc_bert.data", command, "--help"], "--output_dir", "(default:")
     for command in ("fetch", "shard", "samples", "train-tokenizer", "prepare")] + [
    (["hpc_bert.glue", "expand", "--help"], "--checkpoints", "(default: (none))"),
    (["hpc_bert.glue", "run", "--help"], "--force", "(default: false)"),
    (["hpc_bert.glue", "aggregate", "--help"], "--exclude_from_average", "(default: WNLI)"),
]


@pytest.fixture(scope="module")
def helps():
    """All help texts, the interpreters started at once (each spends its time importing)."""
    env = dict(os.environ, COLUMNS="100")
    procs = [subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv, _, _ in ENTRY_POINTS]
    return [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(ENTRY_POINTS)), ids=[" ".join(e[0]) for e in ENTRY_POINTS])
def test_help_lists_flags_with_defaults_and_exits_0(helps, i):
    argv, flag, default = ENTRY_POINTS[i]
    rc, out, err = helps[i]
    assert rc == 0, f"python -m {' '.join(argv)} exited {rc}: {err.strip()}"
    entry = flag_entry(out, flag)
    assert entry is not None, f"{flag} missing from the help of {' '.join(argv)}:\n{out}"
    assert default in entry, f"{flag}'s default {default!r} missing from: {entry!r}"


def flag_entry(help_text: str, flag: str) -> str | None:
    """The help entry that starts with ``flag``, its wrapped lines joined."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(flag):
            block = [line]
            for more in lines[i + 1:]:
                if not more.startswith("   ") or more.strip().startswith("-"):
                    break
                block.append(more)
            return " ".join(" ".join(block).split())
    return None
