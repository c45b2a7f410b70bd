"""The model card of an exported checkpoint: README.md in the Hugging Face card format (a YAML
header, then prose), every figure read from the run dir — the recipe (the training checkpoint's
config), the budget and how it was spent (the ledger), hardware and tokens seen (metrics.jsonl),
the final validation loss and the GLUE table."""
from __future__ import annotations

import os

from hpc_bert.layout import GLUE_TABLE_MD
from hpc_bert.pretrain.clock import Ledger

RECIPE_FIELDS = ("encoder_ln_mode", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                 "hidden_act", "vocab_size", "max_position_embeddings", "optimizer_type", "lr", "lr_schedule", "curve",
                 "warmup_proportion", "train_batch_size", "train_micro_batch_size_per_gpu", "adam_beta1", "adam_beta2",
                 "weight_decay", "gradient_clipping", "dynamic_masking", "mlm_probability", "bf16", "fp16",
                 "zero_stage", "total_training_time", "seed")


def _header(name: str, license_id: str, language: str) -> list[str]:
    return ["---", f"license: {license_id}", f"language: {language}", "library_name: transformers",
            "pipeline_tag: fill-mask", "tags:", "  - bert", "  - fill-mask", "  - masked-lm", "  - hpc_bert",
            "  - budgeted-pretraining", "---", "", f"# {name}", ""]


def _recipe(config: dict, hf_config: dict) -> list[str]:
    lines = ["## Recipe", "", "| setting | value |", "|---|---|"]
    merged = {"vocab_size": hf_config.get("vocab_size"), **{k: v for k, v in config.items() if v is not None}}
    lines += [f"| `{k}` | {merged[k]} |" for k in RECIPE_FIELDS if k in merged]
    return lines + [""]


def _budget(ledger: Ledger | None) -> list[str]:
    if ledger is None:
        return ["## Budget", "", "No ledger (budget.json) in the run dir.", ""]
    t = ledger.totals()
    lines = ["## Budget and how it was spent", "",
             f"Budget {ledger.budget_s / 3600:g} h of training time; spent {t['elapsed_s'] / 3600:.3f} h "
             f"({t['progress']:.1%}) in {t['allocations']} allocation{'s' * (t['allocations'] != 1)} "
             f"({t['requeues']} requeue{'s' * (t['requeues'] != 1)} by the scheduler, {t['resubmissions']} "
             f"resubmission{'s' * (t['resubmissions'] != 1)}); "
             + ("finished." if t["done"] else "not finished."),
             "", f"Wall seconds: train {t['train_s']:.1f}, validation {t['validation_s']:.1f}, checkpoint "
                 f"{t['checkpoint_s']:.1f}; overhead: startup {t['startup_s']:.1f}, lost {t['lost_s']:.1f} "
                 "(work redone after an allocation died between checkpoints).", "",
             "| # | job | hosts | ranks | train s | lost s | steps | end reason |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {i} | {a.job_id} | {','.join(a.hosts)} | {a.world_size or '-'} | {a.train_s:.1f} | {a.lost_s:.1f} "
              f"| {a.step_begin}->{a.step_last} | {a.end_reason or 'died'} |" for i, a in enumerate(ledger.allocations)]
    return lines + [""]


def _training(events: list[dict]) -> list[str]:
    starts = [e for e in events if e["event"] == "allocation_start"]
    devices = sorted({f"{e.get('world_size', '?')} x {e['device']}" for e in starts if e.get("device")})
    seen = [e["tokens_seen"] for e in events if e.get("tokens_seen") is not None]
    vals = [e for e in events if e["event"] == "validation"]
    train = [e for e in events if e["event"] == "train"]
    lines = ["## Hardware and training", "", f"- hardware: {'; '.join(devices) or 'not recorded'}"]
    lines.append(f"- tokens seen: {max(seen)} (real tokens, padding excluded)" if seen else
                 "- tokens seen: not recorded")
    if events:
        lines.append(f"- optimizer steps: {max(e['step'] for e in events)}")
    mfus = [e["mfu"] for e in train if e.get("mfu") is not None]
    if mfus:
        lines.append(f"- MFU (last train event): {mfus[-1]:.1%}")
    lines.append(f"- final validation loss (MLM): {vals[-1]['val_loss']:.4f} at step {vals[-1]['step']}" if vals else
                 "- final validation loss: no validation ran")
    return lines + [""]


def model_card(run_dir: str, checkpoint: str, checkpoint_meta: dict, config: dict, hf_config: dict,
               events: list[dict], license_id: str, language: str) -> str:
    """The README.md text for ``checkpoint`` of ``run_dir``."""
    name = f"{os.path.basename(os.path.abspath(run_dir))} ({checkpoint})"
    arch = (f"{hf_config.get('model_type', 'bert')}, {hf_config.get('num_hidden_layers')} layers x "
            f"{hf_config.get('hidden_size')} hidden, {hf_config.get('num_attention_heads')} heads")
    where = f"step {checkpoint_meta.get('step')}, {checkpoint_meta.get('progress', 0):.1%} of the budget"
    lines = _header(name, license_id, language)
    lines += [f"A BERT masked language model ({arch}) pretrained with hpc_bert under a wall-clock budget. "
              f"This is its `{checkpoint}` checkpoint ({where}).", "", "## Use", "", "```python",
              "from transformers import AutoModelForMaskedLM, AutoTokenizer",
              'model = AutoModelForMaskedLM.from_pretrained("PATH")',
              'tokenizer = AutoTokenizer.from_pretrained("PATH")', "```", ""]
    lines += _recipe(config, hf_config) + _budget(Ledger.load(run_dir)) + _training(events)
    table = os.path.join(run_dir, GLUE_TABLE_MD)
    lines += ["## GLUE", ""] + ([open(table).read().rstrip(), ""] if os.path.exists(table) else
                                ["No GLUE table in the run dir yet (python -m hpc_bert.glue aggregate writes it).", ""])
    return "\n".join(lines)
