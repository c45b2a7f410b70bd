"""``python -m hpc_bert.train``: pretrain under a wall-clock budget (see loop.py)."""
from __future__ import annotations

import sys

from hpc_bert.config.flags import parse_config, to_yaml
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import exit_on_user_error

EXTRA_FLAGS = [
    ("--print_config", {"action": "store_true", "default": False,
                        "help": "print the resolved config as YAML and exit"}),
]


def parse_args(argv=None) -> tuple[PretrainConfig, object]:
    return parse_config(PretrainConfig, argv, prog="python -m hpc_bert.train",
                        description="Pretrain BERT under a wall-clock budget.", extra=EXTRA_FLAGS)


@exit_on_user_error
def main(argv=None) -> int:
    cfg, extra = parse_args(argv)
    if extra.print_config:
        sys.stdout.write(to_yaml(cfg))
        for note in cfg.notes():
            print(f"note: {note}", file=sys.stderr)
        return 0
    from hpc_bert.pretrain.loop import run_training  # heavy imports only when training
    return run_training(cfg)
