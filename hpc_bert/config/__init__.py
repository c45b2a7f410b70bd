"""Configuration: nested dataclasses validated in ``__post_init__`` (pretrain) and the one
flag machinery every entry point uses (flags: dataclass fields -> argparse, YAML layering,
choices checked from field metadata)."""
