"""Site options for the chain's sbatch scripts: ``--slurm_additional KEY=VALUE`` and ``--setup CMD``.

``KEY=VALUE`` becomes ``#SBATCH --KEY=VALUE`` (a bare ``KEY``, e.g. ``exclusive``, becomes
``#SBATCH --KEY``) through submitit's ``additional_parameters``; ``--setup`` lines run in the
job script before srun (submitit's ``setup``). Checked before anything is submitted: the
option must be one sbatch knows, must not be one that ``submit`` sets from its own flags,
and, where a SLURM controller answers, ``sbatch --test-only`` must accept it.
"""
from __future__ import annotations

import subprocess

from hpc_bert.errors import UserError

# sbatch's long options (slurm 22.05 man page) that a site may need and submit does not set itself.
SBATCH_OPTIONS = frozenset("""
acctg-freq batch bb bbf begin cluster-constraint clusters comment constraint container contiguous
core-spec cores-per-socket cpu-freq cpus-per-gpu deadline delay-boot distribution exclude exclusive
export export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus gpus-per-socket gpus-per-task
gres gres-flags hint hold ignore-pbs licenses mail-type mail-user mcs-label mem-bind mem-per-cpu mem-per-gpu
mincpus network nice no-kill nodefile nodelist ntasks-per-core ntasks-per-gpu ntasks-per-socket
overcommit oversubscribe power prefer priority profile propagate reboot reservation sockets-per-node
spread-job switches thread-spec threads-per-core time-min tmp uid use-min-nodes wait-all-nodes wckey
""".split())
# Options that stand alone (``--exclusive``); the others need a value.
BARE_OPTIONS = frozenset("contiguous exclusive hold ignore-pbs overcommit oversubscribe reboot spread-job "
                         "use-min-nodes get-user-env no-kill".split())
# Options submit sets from its own flags (or needs for the chain to work): name the flag to use instead.
OWN_OPTIONS = {"partition": "--partition", "p": "--partition", "account": "--account", "A": "--account",
               "qos": "--qos", "time": "--allocation_hours / --glue_allocation_hours", "t": "--allocation_hours",
               "nodes": "--nodes", "N": "--nodes", "ntasks-per-node": "--gpus_per_node",
               "cpus-per-task": "--cpus_per_task", "c": "--cpus_per_task", "gpus-per-node": "--gpus_per_node",
               "mem": "--mem_gb", "job-name": None, "J": None, "output": None, "o": None, "error": None, "e": None,
               "signal": "--signal_delay_s", "array": "--glue_parallelism", "dependency": None, "d": None,
               "requeue": None, "no-requeue": None, "kill-on-invalid-dep": None, "open-mode": None,
               "wrap": None, "parsable": None, "test-only": None, "chdir": None, "D": None, "ntasks": None,
               "n": None}


def parse(options: tuple[str, ...], flag: str) -> dict[str, str | bool | None]:
    """``KEY=VALUE`` / ``KEY`` items as submitit's additional_parameters (``KEY=``: drop KEY, value None)."""
    out: dict[str, str | bool | None] = {}
    for item in options:
        key, eq, value = item.strip().partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if key in OWN_OPTIONS:
            instead = OWN_OPTIONS[key]
            raise UserError(f"{flag} {item}: submit sets --{key} itself"
                            + (f": pass {instead} instead" if instead else ": drop it"))
        if key not in SBATCH_OPTIONS:
            import difflib
            near = difflib.get_close_matches(key, sorted(SBATCH_OPTIONS), n=2, cutoff=0.6)
            raise UserError(f"{flag} {item}: sbatch has no option --{key}"
                            + (f": did you mean {' or '.join(near)}?" if near else ": see man sbatch"))
        if not eq:
            if key not in BARE_OPTIONS:
                raise UserError(f"{flag} {item}: --{key} needs a value: pass {key}=VALUE")
            out[key] = True
        else:
            out[key] = value.strip() or None  # KEY= : this job kind drops KEY
    return out


def merged(base: dict, override: dict) -> dict:
    """The GLUE jobs' options: the common ones, with --glue_slurm_additional's keys winning
    (``KEY=`` there removes KEY)."""
    out = {**base, **override}
    return {k: v for k, v in out.items() if v is not None}


# GPU requests: the aggregation is a CPU job and never asks for them.
GPU_OPTIONS = frozenset("gres gpus gpus-per-socket gpus-per-task cpus-per-gpu mem-per-gpu gpu-bind gpu-freq".split())


def without_gpus(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in GPU_OPTIONS}


def check_setup(lines: tuple[str, ...]) -> list[str]:
    for line in lines:
        if not line.strip():
            raise UserError("--setup got an empty command: pass a shell line, e.g. --setup 'module load cuda/12.4'")
        if "\n" in line:
            raise UserError(f"--setup {line!r} spans lines: pass each command as its own --setup")
    return list(lines)


def sbatch_test_only(options: dict, partition: str | None, what: str) -> None:
    """Ask the controller whether it would accept these options (nothing is submitted)."""
    cmd = ["sbatch", "--test-only", "--time=1", "--wrap=true"] + ([f"--partition={partition}"] if partition else [])
    cmd += [f"--{k}" if v is True else f"--{k}={v}" for k, v in options.items() if v is not None]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"could not check the {what} job's sbatch options ({e}): retry on a login node") from None
    if r.returncode != 0:
        msg = " ".join((r.stderr or r.stdout).split()).replace("sbatch: error: ", "")
        raise UserError(f"sbatch rejects the {what} job's options ({msg}): fix --slurm_additional / "
                        "--glue_slurm_additional")
