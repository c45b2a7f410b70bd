"""What the SLURM cluster says about a partition: its time limit (MaxTime), its QOS's MaxWall and
its GPUs per node (GRES). Every query answers None when SLURM cannot tell (no sinfo on PATH, no
controller, no accounting, a limit of ``infinite``), so a laptop's dry run still works."""
from __future__ import annotations

import re
import shutil
import subprocess

UNLIMITED = ("", "infinite", "unlimited", "n/a", "none")


def duration_hours(text: str) -> float | None:
    """SLURM's ``[days-]hours:minutes:seconds`` (or ``minutes``, ``m:s``, ``h:m:s``) in hours; None when unlimited."""
    text = text.strip()
    if text.lower() in UNLIMITED:
        return None
    days, _, hms = text.rpartition("-")
    parts = [int(x) for x in hms.split(":")]
    if len(parts) == 1:
        return int(days or 0) * 24 + parts[0] / 60  # a bare number is minutes
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 24 + parts[0] + parts[1] / 60 + parts[2] / 3600


def _query(cmd: list[str]) -> list[str] | None:
    """The command's output lines, or None when it is missing or fails."""
    if not shutil.which(cmd[0]):
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in r.stdout.splitlines() if line.strip()] if r.returncode == 0 else None


def _partition_rows(partition: str | None, fmt: str) -> tuple[str | None, list[str]]:
    """(partition name, its sinfo rows of ``fmt``); the default partition (marked *) when none is named."""
    rows = _query(["sinfo", "-h", "-o", f"%P|{fmt}"]) or []
    split = [row.split("|", 1) for row in rows if "|" in row]
    name = partition or next((p.rstrip("*") for p, _ in split if p.endswith("*")), None)
    return name, [value for p, value in split if p.rstrip("*") == name]


def partition_max_time(partition: str | None) -> tuple[str | None, float | None]:
    """(partition name, its MaxTime in hours); hours None when unlimited or unknown."""
    name, rows = _partition_rows(partition, "%l")
    return name, duration_hours(rows[0]) if rows else None


def qos_max_wall(qos: str | None) -> float | None:
    """The QOS's MaxWall in hours, where accounting answers (None: no QOS, no limit, or unreadable)."""
    if not qos:
        return None
    rows = _query(["sacctmgr", "-nP", "show", "qos", qos, "format=MaxWall"])
    return duration_hours(rows[0]) if rows else None


def gres_gpus(gres: str) -> int:
    """GPUs per node in a GRES string: 'gpu:8', 'gpu:a100:4(S:0-1)', 'gpu:a100:4,gpu:v100:2' -> 8, 4, 6."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def partition_gpus(partition: str | None) -> tuple[str | None, int | None]:
    """(partition name, GPUs per node from its GRES); the fewest of its GPU nodes when they differ
    (a job asking for more would never start there), None when SLURM reports no GPUs."""
    name, rows = _partition_rows(partition, "%G")
    counts = [n for n in (gres_gpus(r) for r in rows) if n > 0]
    return name, min(counts) if counts else None
