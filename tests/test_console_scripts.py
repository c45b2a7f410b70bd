"""The ``hpc-bert`` console script (pyproject's entry point) runs every command as
``python -m hpc_bert.COMMAND`` does, and stays as light as it at start-up."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_bert.cli import COMMANDS

SCRIPT = Path(sys.executable).parent / "hpc-bert"
REQUIRED = ("submit", "train", "status", "data", "glue", "export")


def run(*args, **env):
    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e . (tools/setup_env.sh does) installs it"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, COLUMNS="100", **env))


def test_the_script_lists_the_commands_and_refuses_an_unknown_one():
    out = run("--help")
    assert out.returncode == 0 and all(f"  {c} " in out.stdout for c in REQUIRED)
    bad = run("pretrain")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "submit" in bad.stderr


@pytest.mark.slow
def test_every_command_answers_help_through_the_script():
    procs = {c: subprocess.Popen([str(SCRIPT), c, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=dict(os.environ, COLUMNS="100")) for c in REQUIRED}
    for command, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"hpc-bert {command} --help: {err.strip()}"
        assert command in out  # each command's own help (glue's lists its subcommands)
    assert set(REQUIRED) <= set(COMMANDS)


def test_a_command_runs_through_the_script_like_python_m(tmp_path):
    missing = str(tmp_path / "nope")
    via_script = run("status", missing)
    via_module = subprocess.run([sys.executable, "-m", "hpc_bert.status", missing], capture_output=True, text=True)
    assert via_script.returncode == via_module.returncode == 2
    assert via_script.stderr == via_module.stderr and "does not exist" in via_script.stderr


def test_status_through_the_script_starts_without_torch():
    assert SCRIPT.exists()
    out = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPT), "status", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    # importlib's by-name import is not itemised; status's own imports show it ran
    assert "hpc_bert.launch.queue" in loaded and not loaded & {"torch", "deepspeed", "transformers"}
