"""Flags from dataclasses: one signature, one parser, one message for unknown flags.

A config is a dataclass whose fields are either plain values or nested section
dataclasses. Every leaf field name is unique across sections and is the flag name
(``--lr``, ``--total_training_time``), so YAML keys and CLI flags share names. Values are
layered: dataclass defaults < YAML (``--config FILE``) < flags on the command line.
YAML may be flat (``lr: 1e-3``) or grouped by section (``optim: {lr: 1e-3}``).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import types
import typing
from typing import Any, Sequence

import yaml

from hpc_bert.errors import ConfigError, UserError, gather, problems_of, raise_all


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _resolved_fields(cls) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def leaf_fields(cls) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    """flag name -> (section name or None, field, resolved type)."""
    out: dict[str, tuple[str | None, dataclasses.Field, Any]] = {}
    for f, tp in _resolved_fields(cls):
        if _is_section(tp):
            for sf, stp in _resolved_fields(tp):
                assert sf.name not in out, f"duplicate flag name {sf.name}"
                out[sf.name] = (f.name, sf, stp)
        else:
            out[f.name] = (None, f, tp)
    return out


def _base_type(tp: Any) -> Any:
    """Strip Optional[...] / X | None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Turn a YAML or CLI value into the field's type, or raise a one-line ConfigError."""
    base = _base_type(tp)
    if value is None:
        return None
    try:
        if base is bool:
            return value if isinstance(value, bool) else parse_bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if typing.get_origin(base) in (tuple, list):
            (item,) = set(typing.get_args(base)) - {Ellipsis}
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            elif not isinstance(value, (list, tuple)):
                value = [value]
            return tuple(item(v) for v in value)
    except (TypeError, ValueError):
        kind = getattr(base, "__name__", str(base))
        raise ConfigError(f"--{name} expects {kind}, got {value!r}") from None
    return value


def _closest(name: str, valid: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(f"--{n}" for n in near) + "?"
    return "valid flags: " + " ".join(f"--{n}" for n in sorted(valid))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors become one-line UserErrors
        raise ConfigError(f"{message} (run with --help to list the valid flags)")


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (None when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _help_text(f: dataclasses.Field) -> str:
    """The field's help, its valid values and its default: what --help prints for one flag."""
    parts = [f.metadata.get("help", "")]
    if f.metadata.get("choices"):
        parts.append("{" + ",".join(map(str, f.metadata["choices"])) + "}")
    parts.append(f"(default: {_shown(default_of(f))})")
    return " ".join(p for p in parts if p)


def build_parser(cls, prog: str, description: str, extra: Sequence[tuple[str, dict]] = ()) -> argparse.ArgumentParser:
    # SUPPRESS keeps unset flags out of the namespace (YAML values may sit under them), so
    # the defaults are in each flag's help text instead.
    parser = _Parser(prog=prog, description=description, allow_abbrev=False,
                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", help="YAML file; flags given on the command line win")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    for name, (section, f, tp) in leaf_fields(cls).items():
        if _base_type(tp) is bool:
            # `--fp16` sets true; `--fp16 false` and `--no_fp16` are accepted too.
            parser.add_argument(f"--{name}", nargs="?", const="true", help=_help_text(f))
            parser.add_argument(f"--no_{name}", dest=name, action="store_const", const="false",
                                help=argparse.SUPPRESS)
        elif f.metadata.get("repeatable"):
            parser.add_argument(f"--{name}", action="append", help=_help_text(f) + " (repeatable)")
        else:
            parser.add_argument(f"--{name}", help=_help_text(f))
    return parser


def read_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"config file {path} does not exist: pass an existing YAML file to --config")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise UserError(f"config file {path} is not valid YAML ({first}): fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of flag: value")
    return data


def flatten_yaml(cls, data: dict[str, Any], source: str) -> dict[str, Any]:
    leaves = leaf_fields(cls)
    sections = {s for s, _, _ in leaves.values() if s}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in sections and isinstance(value, dict):
            for k, v in value.items():
                flat[str(k).replace("-", "_")] = v
        else:
            flat[key] = value
    raise_all([f"unknown key {key!r} in {source}: {_closest(key, list(leaves))}" for key in flat if key not in leaves])
    return flat


def build_config(cls, values: dict[str, Any]):
    """Construct the (nested) dataclass from flat values; __post_init__ validates. Every value of
    a wrong type and every section's problem are raised together (one line each)."""
    leaves = leaf_fields(cls)
    top: dict[str, Any] = {}
    per_section: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, value in values.items():
        section, _f, tp = leaves[name]
        value = gather(problems, lambda: _coerce(name, tp, value))
        if section is None:
            top[name] = value
        else:
            per_section.setdefault(section, {})[name] = value
    raise_all(problems)
    for f, tp in _resolved_fields(cls):
        if _is_section(tp):
            top[f.name] = _build_section(tp, per_section.get(f.name, {}), problems)
    raise_all(problems)
    return cls(**top)


def _build_section(tp, values: dict[str, Any], problems: list[str]):
    """One section, its problems added to ``problems``. A section's checks stop at their first
    problem, so the flag it names is set back to its default and the section checked again, until
    it passes or a problem repeats: the user sees every bad flag of the section at once."""
    values = dict(values)
    while True:
        try:
            return tp(**values)
        except UserError as e:
            new = [p for p in problems_of(e) if p not in problems]
            problems.extend(new)
            named = [n for n in values if any(f"--{n} " in f"{p} " for p in new)]
            if not named:
                return None
            for n in named:
                values.pop(n)


def parse_config(cls, argv: Sequence[str] | None, prog: str, description: str = "",
                 extra: Sequence[tuple[str, dict]] = ()):
    """Parse flags (and --config YAML) into ``cls``. Returns (config, extra_namespace)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(cls, prog, description, extra)
    known, unknown = parser.parse_known_args(argv)
    valid = list(leaf_fields(cls)) + [e[0].lstrip("-") for e in extra] + ["config"]
    flags = [u for u in unknown if u.startswith("-")]
    problems = [f"unknown flag {bad.split('=')[0]}: {_closest(bad.lstrip('-').split('=')[0], valid)}"
                for bad in flags]
    if unknown and not flags:
        problems.append(f"unexpected argument {unknown[0]!r}: flags take the form --name value")
    ns = vars(known)
    values: dict[str, Any] = {}
    if ns.get("config"):
        values.update(gather(problems, lambda: flatten_yaml(cls, read_yaml(ns["config"]), ns["config"])) or {})
    leaves = leaf_fields(cls)
    extras = {k: v for k, v in ns.items() if k not in leaves and k != "config"}
    values.update({k: v for k, v in ns.items() if k in leaves})
    cfg = gather(problems, lambda: build_config(cls, {k: v for k, v in values.items() if k in leaves}))
    raise_all(problems)
    return cfg, argparse.Namespace(config=ns.get("config"), **extras)


def to_dict(cfg) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) for YAML / JSON."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = {sf.name: plain(getattr(v, sf.name)) for sf in dataclasses.fields(v)}
        else:
            out[f.name] = plain(v)
    return out


def flat_dict(cfg) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def check_choices(cfg) -> None:
    """Every field of ``cfg`` with ``choices`` metadata holds one of them (None: unset).

    Every config's ``__post_init__`` calls it (before checks that read those fields), so the
    valid values are written once, in the field, and every bad value gets the same message."""
    problems = []
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        for item in value if isinstance(value, tuple) else (value,):  # a list flag: each item is a choice
            if choices and item is not None and item not in choices:
                problems.append(f"--{f.name} {item!r} is not valid: choose one of {', '.join(map(str, choices))}")
    # an alias holds its flag's value: the same bad value is reported once
    raise_all([p for i, p in enumerate(problems) if p.split(" ", 1)[1] not in {q.split(" ", 1)[1] for q in problems[:i]}])


def field(default: Any = dataclasses.MISSING, *, help: str = "", choices: Sequence[Any] | None = None,
          default_factory: Any = dataclasses.MISSING, repeatable: bool = False):
    """``repeatable``: a tuple flag given once per item (``--setup A --setup B``), never split at commas."""
    meta = {"help": help}
    if choices:
        meta["choices"] = tuple(choices)
    if repeatable:
        meta["repeatable"] = True
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
