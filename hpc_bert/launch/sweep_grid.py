"""A sweep's grid (YAML): one base pretraining config and the members that vary it.

    base: configs/pretrain/academic-bert-large.yaml
    axes:                      # the members are the product; the first axis varies slowest
      lr: [5.0e-4, 1.0e-3]
      train_batch_size: [4096, 8192]
or
    members:                   # an explicit list of flag -> value maps
      - {lr: 1.0e-3, curve: linear}
      - {lr: 2.0e-3, curve: exp}

Keys are pretraining flags (``python -m hpc_bert.train --help``). Each member is named from its
values (``lr1e-3_bs4096``) and trains in SWEEP_DIR/NAME. Checked here: the grid's shape, unknown
flags, duplicates; each value is checked by the pretraining config itself when the sweep plans
the member (launch/sweep.py).
"""
from __future__ import annotations

import difflib
import itertools
import os
import re
from dataclasses import dataclass

from hpc_bert.config.flags import leaf_fields, read_yaml
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import UserError

# Short names for the flags sweeps vary most; any other flag is named in full.
SHORT_NAMES = {"lr": "lr", "train_batch_size": "bs", "train_micro_batch_size_per_gpu": "mbs",
               "warmup_proportion": "wu", "curve": "curve", "encoder_ln_mode": "ln", "weight_decay": "wd",
               "adam_beta2": "b2", "lr_schedule": "sched", "seed": "seed"}
# Flags the sweep sets for every member: --budget sets the training time, the sweep dir the output dir.
SET_BY_SWEEP = {"total_training_time": "--budget", "output_dir": "--sweep_dir", "config": "the grid's base:"}


@dataclass(frozen=True)
class Member:
    name: str
    values: dict  # pretraining flag -> value, as the grid wrote it (numbers normalized)

    def flags(self) -> list[str]:
        return [x for key, value in self.values.items() for x in (f"--{key}", flag_value(value))]

    def describe(self) -> str:
        return ", ".join(f"{k}={flag_value(v)}" for k, v in self.values.items())


@dataclass
class Grid:
    path: str
    base: str
    axes: list[str]      # every flag some member sets, in the grid's order
    members: list[Member]

    def identity(self) -> dict:
        """What makes two grids the same sweep (stored in SWEEP_DIR/sweep.json)."""
        return {"base": self.base, "members": [m.values for m in self.members]}


def flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(flag_value(v) for v in value)
    if isinstance(value, float) and value and not 1e-2 <= abs(value) < 1e6:  # 5e-4, not 0.0005
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _normalized(value):
    """4096.0 and 4096 are the same member; lists compare as lists."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    return value


def _short(value) -> str:
    text = flag_value(value)
    return os.path.basename(text.rstrip("/")) if "/" in text else text  # a path: its last part


def member_name(values: dict) -> str:
    # numbers follow the flag's short name (lr2e-3, bs4096); words after a dash (curve-exp)
    parts = [SHORT_NAMES.get(k, k) + ("-" if _short(v)[:1].isalpha() else "") + _short(v) for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", "_".join(parts)) or "base"


def _check_axis(name: str, path: str) -> None:
    if name in SET_BY_SWEEP:
        raise UserError(f"grid {path}: --{name} is set by {SET_BY_SWEEP[name]} for every member: "
                        "drop it from the grid")
    valid = list(leaf_fields(PretrainConfig))
    if name not in valid:
        near = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        raise UserError(f"grid {path}: unknown axis {name!r}"
                        + (f": did you mean --{near[0]}?" if near else ": axes are pretraining flags "
                           "(python -m hpc_bert.train --help)"))


def _members_from(data: dict, path: str) -> list[dict]:
    if ("axes" in data) == ("members" in data):
        raise UserError(f"grid {path} needs exactly one of axes: (flag -> list of values, the members are "
                        "their product) or members: (a list of flag -> value maps)")
    if "axes" in data:
        axes = data["axes"] or {}
        if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
            raise UserError(f"grid {path}: axes: must map each flag to a list of values, e.g. lr: [1.0e-3, 2.0e-3]")
        if not axes or any(len(v) == 0 for v in axes.values()):
            raise UserError(f"grid {path} is empty: give each axis at least one value")
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    members = data["members"] or []
    if not isinstance(members, list) or not all(isinstance(m, dict) and m for m in members):
        raise UserError(f"grid {path}: members: must be a list of flag -> value maps, e.g. - {{lr: 1.0e-3}}")
    if not members:
        raise UserError(f"grid {path} is empty: list at least one member under members:")
    return members


def load(path: str) -> Grid:
    if not os.path.isfile(path):
        raise UserError(f"grid {path} does not exist: pass --grid FILE.yaml (see configs/sweep/)")
    data = read_yaml(path) or {}
    unknown = sorted(set(data) - {"base", "axes", "members"})
    if unknown:
        raise UserError(f"grid {path}: unknown key {unknown[0]!r}: a grid has base:, and axes: or members:")
    base = data.get("base")
    if not base:
        raise UserError(f"grid {path} has no base: name the pretraining config the members vary, "
                        "e.g. base: configs/pretrain/academic-bert-large.yaml")
    if not os.path.isfile(str(base)):
        raise UserError(f"grid {path}: base {base} does not exist: give a pretraining config's path "
                        "(relative to where you run the sweep)")
    members, seen, names = [], {}, {}
    for values in _members_from(data, path):
        values = {str(k): _normalized(v) for k, v in values.items()}
        for key in values:
            _check_axis(key, path)
        key = repr(sorted(values.items()))
        if key in seen:
            raise UserError(f"grid {path}: members {seen[key]} and {len(members)} have the same values "
                            f"({Member('', values).describe()}): drop one")
        seen[key] = len(members)
        name = member_name(values)
        if name in names:
            raise UserError(f"grid {path}: members {names[name]} and {len(members)} get the same name {name}: "
                            "make their values differ more")
        names[name] = len(members)
        members.append(Member(name, values))
    axes = list(dict.fromkeys(k for m in members for k in m.values))
    return Grid(path, str(base), axes, members)


def member_table(grid: Grid, run_dirs: dict[str, str], states: dict[str, str] | None = None) -> str:
    """The members as a text table: index, name, one column per axis, run dir (and state)."""
    head = ["#", "member"] + grid.axes + (["state"] if states else []) + ["run dir"]
    rows = [[str(i), m.name] + [flag_value(m.values[a]) if a in m.values else "(base)" for a in grid.axes]
            + ([states.get(m.name, "")] if states else []) + [run_dirs[m.name]]
            for i, m in enumerate(grid.members)]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows)
