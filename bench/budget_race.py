"""What a wall-clock budget buys: hpc_bert.train against the HF Trainer, same model, shards, seed and budget.

(a) ours: ``python -m hpc_bert.train`` with its recipe for short budgets (the time-based schedule,
    full-sentence packing with per-document attention, no dropout, 40% dynamic masking), for
    ``--minutes`` of training clock.
(b) HF: transformers' Trainer as ``run_mlm`` sets it up: DataCollatorForLanguageModeling (15%
    dynamic masking), a linear schedule with ``max_steps`` sized to the budget from a short pilot of
    its own step rate, the same model class and shape from the same seed, the same batch and warmup
    proportion; fed the same prepared rows (their static masks undone). Its peak LR is the best of
    three: ours, half, a quarter, each run for the same budget (a cap stops it at the budget if it is
    slower than its pilot). The best one then runs again with a schedule sized to ``--hf_factor``
    budgets, evaluated along the way, to see how long HF needs to reach our final loss.

Both sides are scored by one function (``mlm_loss``) on the same held-out rows: the test split's
text, one document per row (``--packing doc_sentences``), with the shards' static 15% masks, so
that per-document and whole-row attention see the same thing. Time counts training only: startup,
compilation and evaluations are excluded on both sides. The machine's load average is printed
with each phase (other processes slow a phase down, not the ratio's definition).

    nice python bench/budget_race.py [--minutes 3] [--hf_factor 3] [--seq_len 128] [--out FILE]

Default total on 2 CPU cores: about 7 budgets (ours 1, HF sweep 3, HF extended 3) plus data
preparation on first use (cached in data/race) — 3-minute budgets: about 23 minutes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hpc_bert.atomic import write_text_atomic  # noqa: E402
from hpc_bert.data.hdf5io import list_shards, read_rows  # noqa: E402
from hpc_bert.data.loader import labels_from_static_mask  # noqa: E402
from hpc_bert.layout import FINAL_NAME, FINETUNE_DIR  # noqa: E402

MODEL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
             max_position_embeddings=512, encoder_ln_mode="pre-ln", hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
OUR_RECIPE = ("--train_batch_size 64 --train_micro_batch_size_per_gpu 32 --lr 3e-3 --warmup_proportion 0.06 "
              "--dynamic_masking --mlm_probability 0.4")
LINES: list[str] = []


def say(text: str) -> None:
    LINES.append(text)
    print(text, flush=True)


def load() -> str:
    return "load avg %.2f %.2f %.2f" % os.getloadavg()


def sh(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


# ---- data: the same shards for both; held-out rows one document each ---------------------------
def prepare(corpus: list[str], seq_len: int) -> tuple[str, str]:
    """(training shards dir, evaluation shards dir), made once under data/race."""
    from quality import write_corpus  # bench/quality.py's corpus writer (bench/ is on sys.path)
    name = "+".join(corpus)
    text = f"data/quality/corpus_{name}"
    if not os.path.isdir(os.path.join(REPO, text)):
        write_corpus(os.path.join(REPO, text), corpus)
    data = f"data/race/{name}{seq_len}"
    preds = seq_len * 20 // 128
    if not os.path.exists(os.path.join(REPO, data, "prepare.json")):
        sh([sys.executable, "-m", "hpc_bert.data", "prepare", "--input", text, "--output_dir", data,
            "--train_tokenizer", "--vocab_size", "8192", "--max_seq_length", str(seq_len),
            "--max_predictions_per_seq", str(preds), "--dup_factor", "1", "--num_train_shards", "8",
            "--progress_bar", "false", "--overwrite"])
    held_out = f"{data}_eval"
    if not os.path.isdir(os.path.join(REPO, held_out)):
        texts = os.path.join(REPO, held_out + "_text")
        os.makedirs(texts, exist_ok=True)
        src = os.path.join(REPO, data, "text_shards", "test_shard_000.txt")
        if not os.path.exists(os.path.join(texts, "test_shard_000.txt")):
            os.symlink(src, os.path.join(texts, "test_shard_000.txt"))
        sh([sys.executable, "-m", "hpc_bert.data", "samples", "--input", texts, "--output_dir", held_out,
            "--tokenizer_name", os.path.join(data, "tokenizer"), "--max_seq_length", str(seq_len),
            "--max_predictions_per_seq", str(preds), "--packing", "doc_sentences", "--short_seq_prob", "0",
            "--progress_bar", "false"])
    return data, held_out


def eval_batches(held_out: str, rows: int, micro: int = 64) -> list[dict]:
    path = os.path.join(REPO, held_out, "test_shard_000.hdf5")
    r = read_rows(path, 0, rows)
    ids = r["input_ids"].astype(np.int64)
    labels = labels_from_static_mask(r["masked_lm_positions"], r["masked_lm_ids"], ids.shape[1])
    out = []
    for i in range(0, len(ids), micro):
        out.append({"input_ids": torch.from_numpy(ids[i:i + micro]),
                    "attention_mask": torch.from_numpy(r["input_mask"][i:i + micro].astype(np.int64)),
                    "token_type_ids": torch.from_numpy(r["segment_ids"][i:i + micro].astype(np.int64)),
                    "labels": torch.from_numpy(labels[i:i + micro])})
    return out


def mlm_loss(hf_model, batches: list[dict]) -> float:
    """The one evaluation: mean cross-entropy over the masked tokens of the held-out rows."""
    was = hf_model.training
    hf_model.eval()
    device = next(hf_model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            n = int((b["labels"] != -100).sum())
            total += float(hf_model(**b).loss) * n
            count += n
    hf_model.train(was)
    return total / max(count, 1)


# ---- ours ----------------------------------------------------------------------------------------
def run_ours(data: str, minutes: float, seed: int, recipe: str, run_dir: str) -> str:
    flags = [x for k, v in MODEL.items() for x in (f"--{k}", str(v))]
    sh([sys.executable, "-m", "hpc_bert.train", "--config", "configs/pretrain/tiny.yaml", "--dataset_path", data,
        "--tokenizer_name", os.path.join(data, "tokenizer"), "--output_dir", run_dir, *flags,
        "--total_training_time", str(minutes / 60), "--finetune_checkpoint_at_end", "--finetune_time_markers", "",
        "--do_validation", "false", "--checkpoint_every_minutes", "10000", "--progress_bar", "false",
        "--tensorboard", "false", "--seed", str(seed), *recipe.split()])
    return os.path.join(run_dir, FINETUNE_DIR, FINAL_NAME)


def our_steps(run_dir: str) -> int:
    with open(os.path.join(run_dir, FINETUNE_DIR, FINAL_NAME, "hpc_bert_meta.json")) as fh:
        return int(json.load(fh)["step"])


# ---- HF ------------------------------------------------------------------------------------------
class ShardRows(torch.utils.data.Dataset):
    """The prepared training rows with their static masks undone: what run_mlm's collator masks."""

    def __init__(self, data: str):
        parts = [read_rows(p, 0, None) for p in list_shards(os.path.join(REPO, data))[0]]
        ids = np.concatenate([p["input_ids"] for p in parts]).astype(np.int64)
        pos = np.concatenate([p["masked_lm_positions"] for p in parts])
        lab = np.concatenate([p["masked_lm_ids"] for p in parts])
        labels = labels_from_static_mask(pos, lab, ids.shape[1])
        self.ids = np.where(labels != -100, labels, ids)
        self.mask = np.concatenate([p["input_mask"] for p in parts]).astype(np.int64)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": torch.from_numpy(self.ids[i]), "attention_mask": torch.from_numpy(self.mask[i])}


def hf_model_for(data: str, seed: int):
    from hpc_bert.config.pretrain import ModelConfig
    from hpc_bert.data.tokenizer import load_tokenizer
    from hpc_bert.model.bert import build_hf_model, padded_vocab_size
    tok = load_tokenizer(os.path.join(REPO, data, "tokenizer"))
    torch.manual_seed(seed)  # the trainer seeds the same way before building its model
    return build_hf_model(ModelConfig(**MODEL), padded_vocab_size(len(tok)), tok.pad_token_id or 0), tok


def run_hf(data, rows, seed, lr, max_steps, cap_s, batch, warmup, evals=None, eval_every_s=None):
    """One HF Trainer run; returns (train seconds, steps, [(train seconds, eval loss)], final loss)."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments
    model, tok = hf_model_for(data, seed)
    clock = {"eval": 0.0, "next": eval_every_s, "curve": []}

    def train_seconds():
        return time.perf_counter() - clock["start"] - clock["eval"]

    class Budget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            t = train_seconds()
            if evals is not None and clock["next"] is not None and t >= clock["next"]:
                t0 = time.perf_counter()
                clock["curve"].append((t, mlm_loss(model, evals)))
                clock["eval"] += time.perf_counter() - t0
                clock["next"] += eval_every_s
            clock["steps"] = state.global_step
            if cap_s is not None and t >= cap_s:
                control.should_training_stop = True

    args = TrainingArguments(
        output_dir=os.path.join(REPO, "runs", "race", "hf_tmp"), per_device_train_batch_size=batch,
        learning_rate=lr, max_steps=max_steps, lr_scheduler_type="linear", warmup_steps=warmup,
        seed=seed, data_seed=seed, save_strategy="no", report_to=[], logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=ShardRows(data) if rows is None else rows,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
                      callbacks=[Budget()])
    trainer.train()
    seconds = train_seconds()
    final = mlm_loss(model, evals) if evals is not None else float("nan")
    return seconds, clock.get("steps", 0), clock["curve"] + [(seconds, final)], final


def pilot_rate(data, rows, seed, lr, batch, warmup, steps: int = 12) -> float:
    """HF steps per second over a short run of its own."""
    seconds, done, _, _ = run_hf(data, rows, seed, lr, steps, None, batch, warmup)
    return done / seconds


def unigram_entropy(rows: "ShardRows") -> float:
    """Entropy (nats) of the training tokens' unigram distribution: the loss of a model that
    predicts every masked token by its frequency alone (the plateau MLM training sits on first)."""
    ids = rows.ids[rows.mask == 1]
    counts = np.bincount(ids).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def time_to_reach(curve: list[tuple[float, float]], target: float, start_loss: float) -> float | None:
    """First time the loss curve (linear between points, from (0, start_loss)) gets to ``target``."""
    points = [(0.0, start_loss)] + sorted(curve)
    if start_loss <= target:
        return 0.0
    for (t0, l0), (t1, l1) in zip(points, points[1:]):
        if l1 <= target:
            return t1 if l0 <= target else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def hf_side(data, rows, args, lr: float, batch: int, warmup: float, evals):
    """The HF Trainer's pilot, its LR sweep at the budget and the best LR's extended run:
    (loss by LR at the budget, best LR, extended run's train seconds, its loss curve)."""
    budget_s = args.minutes * 60
    rate = pilot_rate(data, rows, args.seed, lr, batch, warmup)
    steps = max(1, int(rate * budget_s))
    say(f"[hf] pilot: {rate:.3f} steps/s -> max_steps {steps} for the budget  ({load()})")
    sweep = {}
    for peak in (lr, lr / 2, lr / 4):
        seconds, done, _, final = run_hf(data, rows, args.seed, peak, steps, budget_s, batch, warmup, evals)
        sweep[peak] = final
        say(f"[hf] lr {peak:g}: {done} steps in {seconds:.0f} s: eval MLM loss {final:.3f}  ({load()})")
    best = min(sweep, key=sweep.get)
    long_s = budget_s * args.hf_factor
    seconds, done, curve, final = run_hf(data, rows, args.seed, best, max(1, int(rate * long_s)), long_s, batch,
                                         warmup, evals, long_s / args.eval_points)
    say(f"[hf] lr {best:g}, schedule for {args.hf_factor:g} budgets: {done} steps in {seconds:.0f} s: "
        f"eval MLM loss {final:.3f}  ({load()})")
    say("[hf] curve (train s, eval loss): " + ", ".join(f"({t:.0f}, {v:.3f})" for t, v in curve))
    return sweep, best, seconds, curve


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0, help="the budget: minutes of training each side")
    p.add_argument("--hf_factor", type=float, default=3.0,
                   help="the extended HF run: its schedule spans this many budgets")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--corpus", default="general", help="bench/quality.py's corpus parts, comma-separated")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--recipe", default=OUR_RECIPE, help="our flags for hpc_bert.train")
    p.add_argument("--eval_rows", type=int, default=512, help="held-out rows for the evaluation")
    p.add_argument("--eval_points", type=int, default=12, help="evaluations along the extended HF run")
    p.add_argument("--out", default=None, help="result file (default bench/results/cpu_budget_race_DATE.txt)")
    args = p.parse_args()
    os.chdir(REPO)
    t_all = time.perf_counter()
    data, held_out = prepare(args.corpus.split(","), args.seq_len)
    evals = eval_batches(held_out, args.eval_rows)
    recipe = args.recipe.split()
    lr = float(recipe[recipe.index("--lr") + 1])
    batch = int(recipe[recipe.index("--train_batch_size") + 1])
    warmup = float(recipe[recipe.index("--warmup_proportion") + 1])
    budget_s = args.minutes * 60
    say(f"budget race on {os.cpu_count()} CPUs, torch {torch.__version__}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    say(f"model 4x256 pre-LN, seq {args.seq_len}, corpus {args.corpus}, vocab 8192, budget {args.minutes:g} min "
        f"each side, seed {args.seed}; eval: {args.eval_rows} held-out rows (one document each, static 15% masks)")
    start_loss = mlm_loss(hf_model_for(data, args.seed)[0], evals)
    say(f"untrained model: eval MLM loss {start_loss:.3f}")

    run_dir = os.path.join(REPO, "runs", "race", "ours")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    say(f"[ours] {args.recipe}  ({load()})")
    from transformers import AutoModelForMaskedLM
    ours = mlm_loss(AutoModelForMaskedLM.from_pretrained(run_ours(data, args.minutes, args.seed, args.recipe,
                                                                   run_dir)), evals)
    say(f"[ours] {our_steps(run_dir)} steps in {budget_s:.0f} s: eval MLM loss {ours:.3f}  ({load()})")

    rows = ShardRows(data)
    sweep, best, seconds, curve = hf_side(data, rows, args, lr, batch, warmup, evals)
    reach = time_to_reach(curve, ours, start_loss)
    say("")
    say(f"at the budget ({args.minutes:g} min): ours {ours:.3f}, HF {sweep[best]:.3f} (best of lr "
        + ", ".join(f"{k:g}: {v:.3f}" for k, v in sweep.items()) + ")")
    say(f"HF time to reach our final loss {ours:.3f}: " + (f"{reach:.0f} s = {reach / budget_s:.2f}x our time"
        if reach is not None else f"not reached in {seconds:.0f} s (> {seconds / budget_s:.2f}x our time)"))
    plateau = unigram_entropy(rows)
    regime = "past the unigram plateau" if ours < plateau - 0.3 else "on the unigram plateau"
    say(f"regime: ours went {start_loss:.3f} -> {ours:.3f}; the unigram entropy of the training tokens is "
        f"{plateau:.3f} ({regime}); total wall {(time.perf_counter() - t_all) / 60:.1f} min")
    out = args.out or os.path.join(REPO, "bench", "results",
                                   f"cpu_budget_race_{datetime.date.today():%Y-%m-%d}.txt")
    write_text_atomic(out, "\n".join(LINES) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
