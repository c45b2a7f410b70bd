"""Per-document attention's two kernels where both run: SDPA's boolean mask vs FlexAttention.

On packed rows (a document every ``--doc_tokens`` tokens on average), our MaskedLM's forward
(inference: FlexAttention has no CPU backward, so on CPU only the forward runs both) per row, per
document through SDPA, and per document through FlexAttention (compiled by transformers), timed in
alternating rounds (median). On CUDA ``--train`` times forward + backward instead. The training
step's cost of document masking is ``bench/train_step.py --doc_masking``.

    python bench/doc_attention.py [--preset small] [--micro 16] [--seq 128] [--rounds 5] [--device cpu|cuda] [--train]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import PRESETS, build_model, interleaved, make_batches, model_cfg  # noqa: E402


def stepper(model, batches, device: str, train: bool):
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

    def step():
        for b in batches:
            if train:
                model(**b).backward()
            else:
                with torch.no_grad():
                    model(**b)
    return step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--micro", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batches", type=int, default=2, help="micro batches per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--doc_tokens", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train", action="store_true", help="forward + backward (CUDA only for flex)")
    args = p.parse_args()
    mcfg = model_cfg(args.preset, "pre-ln", 0.0)  # FlexAttention has no attention dropout
    batches = make_batches(args.batches, args.micro, args.seq, 20, doc_tokens=args.doc_tokens)
    steppers = {}
    for name, kernel in (("per row (SDPA)", None), ("per document, SDPA mask", "sdpa"),
                         ("per document, FlexAttention", "flex")):
        model = build_model(mcfg, 20, False, args.device, kernel).train(args.train)
        steppers[name] = stepper(model, batches, args.device, args.train)
    seconds = interleaved(steppers, 1, 1, args.rounds, args.device)
    samples = args.batches * args.micro
    base = seconds["per row (SDPA)"]
    print(f"{args.preset} ({mcfg.num_hidden_layers}x{mcfg.hidden_size}), seq {args.seq}, micro {args.micro}, "
          f"{args.device}, {'forward + backward' if args.train else 'forward only'}, a document every "
          f"{args.doc_tokens} tokens, {torch.get_num_threads()} threads, median of {args.rounds} alternating rounds, "
          f"load avg {os.getloadavg()[0]:.1f}")
    for name, sec in seconds.items():
        print(f"{name:30s} {samples / sec:9.2f} samples/s  {base / sec:.3f}x per row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
