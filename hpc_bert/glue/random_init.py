"""``python -m hpc_bert.glue.random_init CHECKPOINT OUTPUT [--seed N]``: a model of CHECKPOINT's
shape and tokenizer that saw no pretraining, saved as an HF dir, so the GLUE grid can fine-tune
it the same way and its row says what pretraining bought."""
from __future__ import annotations

import argparse
import os
import sys

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from hpc_bert.atomic import atomic_folder
from hpc_bert.errors import UserError, exit_on_user_error


def save_random_init(checkpoint: str, output: str, seed: int = 0) -> str:
    """OUTPUT: CHECKPOINT's config and tokenizer, freshly initialised weights (written whole, then renamed)."""
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise UserError(f"{checkpoint} is not an HF model dir (no config.json): pass a fine-tune checkpoint, "
                        "e.g. RUN_DIR/finetune_checkpoints/final")
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(checkpoint))
    with atomic_folder(output) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(checkpoint).save_pretrained(tmp)
    return output


@exit_on_user_error
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpc_bert.glue.random_init", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="an HF model dir whose shape and tokenizer to copy")
    p.add_argument("output", help="the folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation")
    args = p.parse_args(argv)
    print(f"random init of {args.checkpoint}'s shape: {save_random_init(args.checkpoint, args.output, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
