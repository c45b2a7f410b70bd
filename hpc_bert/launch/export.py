"""``python -m hpc_bert.export RUN_DIR [--checkpoint final|marker_X] --output DIR``: a finished run
as a folder colleagues load: the fine-tune checkpoint's model and tokenizer (what
``AutoModelForMaskedLM`` / ``AutoTokenizer.from_pretrained`` read, offline) and a model card
(README.md) that says how it was made.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from hpc_bert.atomic import atomic_folder, write_text_atomic
from hpc_bert.errors import UserError, exit_on_user_error
from hpc_bert.launch.model_card import model_card
from hpc_bert.layout import FINAL_NAME, FINETUNE_DIR, FINETUNE_META, read_events
from hpc_bert.pretrain.checkpoint_index import find_latest


def finetune_checkpoints(run_dir: str) -> list[str]:
    """Names of the run's complete fine-tune checkpoints (final, marker_0.25, ...)."""
    root = os.path.join(run_dir, FINETUNE_DIR)
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, FINETUNE_META)))


def check_request(run_dir: str, checkpoint: str, output: str) -> str:
    """The checkpoint's folder, or one line naming the problem and the fix."""
    if not os.path.isdir(run_dir):
        raise UserError(f"run dir {run_dir} does not exist: pass the --output_dir / --run_dir of a run")
    names = finetune_checkpoints(run_dir)
    if not names:
        raise UserError(f"{run_dir} has no fine-tune checkpoints: train with --finetune_checkpoint_at_end true "
                        "or --finetune_time_markers, then export")
    if checkpoint not in names:
        raise UserError(f"no checkpoint {checkpoint} in {run_dir}: it has {', '.join(names)} (pass --checkpoint "
                        "one of them)")
    if os.path.exists(output) and os.listdir(output):
        raise UserError(f"--output {output} exists and is not empty: pass a new folder")
    return os.path.join(run_dir, FINETUNE_DIR, checkpoint)


def export(run_dir: str, checkpoint: str, output: str, license_id: str = "apache-2.0", language: str = "en") -> str:
    """Copy the checkpoint's model and tokenizer to ``output`` with a model card; returns ``output``."""
    source = check_request(run_dir, checkpoint, output)
    with open(os.path.join(source, FINETUNE_META)) as fh:
        meta = json.load(fh)
    with open(os.path.join(source, "config.json")) as fh:
        hf_config = json.load(fh)
    latest = find_latest(run_dir) or {}
    card = model_card(run_dir, checkpoint, meta, latest.get("config", {}), hf_config, read_events(run_dir),
                      license_id, language)
    with atomic_folder(output) as tmp:  # output is new or empty (checked above)
        shutil.copytree(source, tmp)
        write_text_atomic(os.path.join(tmp, "README.md"), card)
    return output


@exit_on_user_error
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hpc-bert export", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default=FINAL_NAME, help="final, or a time marker such as marker_0.5")
    p.add_argument("--output", required=True, help="the folder to write (new or empty)")
    p.add_argument("--license", default="apache-2.0", help="the card's license (a Hugging Face license id)")
    p.add_argument("--language", default="en", help="the card's language")
    args = p.parse_args(argv)
    out = export(args.run_dir, args.checkpoint, args.output, args.license, args.language)
    print(f"exported {args.checkpoint} of {args.run_dir} to {out} (model, tokenizer, README.md model card)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
