"""results.json files -> one GLUE table per run dir (Markdown + CSV), one row per checkpoint.

Protocol (Izsak et al. 2021, following common practice): for each checkpoint and task, take
the median over seeds of every hyper-parameter setting (learning rate, batch size), pick the
setting with the best median, and report that median. The GLUE average is the mean of the
table's columns — MNLI-m and MNLI-mm count as two, as in BERT's table — leaving out WNLI by
default. Rows are sorted by budget fraction, so the table reads as quality against budget.
"""
from __future__ import annotations

import csv
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Sequence

from hpc_bert.atomic import atomic_output, write_text_atomic
from hpc_bert.errors import UserError
from hpc_bert.glue.run_files import read_results
from hpc_bert.glue.grid import GLUE_SUBDIR, budget_fraction, checkpoint_sort_key, format_lr
from hpc_bert.glue.tasks import DEFAULT_EXCLUDED_FROM_AVERAGE, TASK_ORDER, TASKS
from hpc_bert.layout import GLUE_RESULTS as RESULTS_FILE, GLUE_TABLE_CSV as CSV_FILE, GLUE_TABLE_MD as MARKDOWN_FILE


@dataclass
class TaskResult:
    """The chosen setting of one task for one checkpoint."""
    task: str
    learning_rate: float
    batch_size: int | None
    seeds: list[int]
    score: float                      # median main score at the chosen setting
    columns: dict[str, float]         # median table columns, e.g. {'MNLI-m': .., 'MNLI-mm': ..}
    extras: dict[str, float]          # median secondary metrics, e.g. {'MRPC accuracy': ..}
    candidates: list[tuple[float, int | None, float, int]] = field(default_factory=list)  # lr, bs, median, n
    runs: list[dict] = field(default_factory=list)   # the chosen setting's records, one per seed
    start_from: str | None = None                    # round two: the task whose fine-tuned model it started from


@dataclass
class CheckpointRow:
    checkpoint: str
    budget_fraction: float | None
    tasks: dict[str, TaskResult]
    average: float | None
    averaged_columns: list[str]


def checkpoint_of(rec: dict, path: str, root: str) -> str:
    """The table row of a record: the folder name of the pretraining checkpoint it started from
    (through a fine-tuned model it started from, for a second-round run)."""
    origin = (rec.get("start_from") or {}).get("checkpoint") or rec.get("checkpoint")
    if origin:
        return os.path.basename(str(origin).rstrip("/")) or str(origin)
    return os.path.relpath(path, root).split(os.sep)[0]


def collect(run_dir: str) -> list[dict]:
    """Every readable results.json anywhere under RUN_DIR/glue/ (or, without one, under RUN_DIR):
    the grid's tree or the output dirs of hand-run finetune commands; each record names its task
    and checkpoint. Unreadable files are reported and skipped: one crashed run must not hide the
    rest of the table."""
    root = os.path.join(run_dir, GLUE_SUBDIR)
    if not os.path.isdir(root):
        if not os.path.isdir(run_dir):
            raise UserError(f"{run_dir} does not exist: pass the run dir whose {GLUE_SUBDIR}/ folder holds results")
        root = run_dir
    records = []
    found = sorted(os.path.join(d, RESULTS_FILE) for d, _, files in os.walk(root) if RESULTS_FILE in files)
    for path in found:
        try:
            rec = read_results(os.path.dirname(path))
            if rec.get("task") not in TASKS:
                raise ValueError(f"unknown task {rec.get('task')!r}")
        except (OSError, ValueError) as e:
            print(f"hpc_bert: note: skipping {path} ({e})", file=sys.stderr)
            continue
        if rec.get("score") is None:
            print(f"hpc_bert: note: skipping {path} (no evaluation score)", file=sys.stderr)
            continue
        rec["_checkpoint"] = checkpoint_of(rec, path, root)
        rec["_dir"] = os.path.dirname(path)
        records.append(rec)
    if not records:
        raise UserError(f"no {RESULTS_FILE} with scores anywhere under {root}: run the GLUE grid first (python -m "
                        "hpc_bert.glue run CONFIG --run_dir RUN_DIR), or pass the folder of finetune --output_dir's")
    return records


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def choose_setting(task: str, records: Sequence[dict]) -> TaskResult:
    """Median over seeds per (lr, batch size); the best median wins (ties: smaller lr)."""
    groups: dict[tuple[float, int | None], list[dict]] = {}
    for rec in records:
        key = (float(rec["learning_rate"]), rec.get("per_device_train_batch_size"))
        groups.setdefault(key, []).append(rec)
    candidates = [(lr, bs, _median([r["score"] for r in recs]), len(recs)) for (lr, bs), recs in groups.items()]
    candidates.sort(key=lambda c: (c[0], c[1] or 0))
    lr, bs, score, _n = max(candidates, key=lambda c: (c[2], -c[0], -(c[1] or 0)))
    chosen = groups[(lr, bs)]
    spec = TASKS[task]
    columns = {c.label: _median([r["scores"][c.label] for r in chosen if c.label in r.get("scores", {})])
               for c in spec.columns if any(c.label in r.get("scores", {}) for r in chosen)}
    extras = {}
    for split in spec.splits:
        for metric in spec.extra_metrics:
            values = [r["metrics"][split][metric] for r in chosen if metric in r.get("metrics", {}).get(split, {})]
            if values:
                extras[f"{spec.name} {metric}"] = _median(values)
    starts = {(r.get("start_from") or {}).get("task") for r in chosen}
    return TaskResult(task, lr, bs, sorted(int(r["seed"]) for r in chosen), score, columns, extras, candidates,
                      chosen, starts.pop() if len(starts) == 1 else ", ".join(sorted(str(t) for t in starts)))


def summarize(records: Sequence[dict], exclude: Sequence[str] = DEFAULT_EXCLUDED_FROM_AVERAGE) -> list[CheckpointRow]:
    by_ckpt: dict[str, dict[str, list[dict]]] = {}
    for rec in records:
        by_ckpt.setdefault(rec["_checkpoint"], {}).setdefault(rec["task"], []).append(rec)
    rows = []
    for name in sorted(by_ckpt, key=checkpoint_sort_key):
        tasks = {t: choose_setting(t, recs) for t, recs in sorted(by_ckpt[name].items(),
                                                                  key=lambda kv: TASK_ORDER.index(kv[0]))}
        cols = {label: v for t, res in tasks.items() if t not in exclude for label, v in res.columns.items()}
        average = sum(cols.values()) / len(cols) if cols else None
        rows.append(CheckpointRow(name, budget_fraction(name), tasks, average, list(cols)))
    return rows


def table_columns(rows: Sequence[CheckpointRow]) -> list[str]:
    present = {label for row in rows for res in row.tasks.values() for label in res.columns}
    return [c.label for t in TASK_ORDER for c in TASKS[t].columns if c.label in present]


def _pct(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}"


def render_markdown(rows: Sequence[CheckpointRow], run_dir: str, exclude: Sequence[str]) -> str:
    columns = table_columns(rows)
    avg_cols = [c for c in columns if all(c not in [x.label for x in TASKS[t].columns] for t in exclude)]
    lines = [f"# GLUE results: {run_dir}", "",
             "Dev-set scores x100. Per task and checkpoint: median over seeds for each learning rate "
             "(and batch size), then the best of those medians (Izsak et al. 2021). CoLA: Matthews "
             "corr.; STS-B: Spearman; MRPC, QQP: F1; others: accuracy. "
             f"GLUE avg: mean of {len(avg_cols)} column(s)"
             + (f", {', '.join(exclude)} left out as is common" if exclude else "") + ".", ""]
    second = sorted({f"{t} from {res.start_from}" for row in rows for t, res in row.tasks.items() if res.start_from},
                    key=lambda x: TASK_ORDER.index(x.split()[0]))
    if second:  # MosaicBERT's two rounds: these started from a fine-tuned model, not the checkpoint
        lines += [f"Started from the best fine-tuned run of another task (second round): {', '.join(second)}.", ""]
    head = ["checkpoint", "budget"] + columns + ["GLUE avg"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(columns) + 1)) + "|")
    for row in rows:
        values = {label: v for res in row.tasks.values() for label, v in res.columns.items()}
        avg = _pct(row.average)
        if row.average is not None and len(row.averaged_columns) < len(avg_cols):
            avg += f" ({len(row.averaged_columns)}/{len(avg_cols)})"  # a partial average says so
        budget = "" if row.budget_fraction is None else f"{row.budget_fraction:g}"
        lines.append("| " + " | ".join([row.checkpoint, budget] + [_pct(values.get(c)) for c in columns] + [avg]) + " |")
    lines += ["", "## Chosen settings", "",
              "| checkpoint | task | lr | batch | seeds | median score | every setting: lr/batch median (n) | other metrics |",
              "|---|---|---:|---:|---|---:|---|---|"]
    for row in rows:
        for task, res in row.tasks.items():
            every = "; ".join(f"{format_lr(lr)}/{bs if bs is not None else '-'} {_pct(m)} ({n})"
                              for lr, bs, m, n in res.candidates)
            extras = ", ".join(f"{k.split(' ', 1)[1]} {_pct(v)}" for k, v in res.extras.items())
            shown = f"{task} (from {res.start_from})" if res.start_from else task
            lines.append(f"| {row.checkpoint} | {shown} | {format_lr(res.learning_rate)} | "
                         f"{res.batch_size if res.batch_size is not None else ''} | "
                         f"{','.join(map(str, res.seeds))} | {_pct(res.score, 2)} | {every} | {extras} |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[CheckpointRow], path: str) -> None:
    columns = table_columns(rows)
    tasks = [t for t in TASK_ORDER if any(t in row.tasks for row in rows)]
    extra_keys = sorted({k for row in rows for res in row.tasks.values() for k in res.extras})
    header = (["checkpoint", "budget_fraction"] + columns + ["glue_avg", "glue_avg_columns"] + extra_keys
              + [f"{t} {what}" for t in tasks for what in ("lr", "batch_size", "seeds")])
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            values = {label: v for res in row.tasks.values() for label, v in res.columns.items()}
            extras = {k: v for res in row.tasks.values() for k, v in res.extras.items()}
            line = [row.checkpoint, "" if row.budget_fraction is None else f"{row.budget_fraction:g}"]
            line += [_pct(values.get(c), 3) for c in columns]
            line += [_pct(row.average, 3), len(row.averaged_columns)]
            line += [_pct(extras.get(k), 3) for k in extra_keys]
            for t in tasks:
                res = row.tasks.get(t)
                line += ([format_lr(res.learning_rate), res.batch_size or "", " ".join(map(str, res.seeds))]
                         if res else ["", "", ""])
            writer.writerow(line)


def aggregate(run_dir: str, exclude: Sequence[str] = DEFAULT_EXCLUDED_FROM_AVERAGE,
              out_dir: str | None = None) -> tuple[list[CheckpointRow], str, str]:
    rows = summarize(collect(run_dir), exclude)
    out_dir = out_dir or run_dir
    os.makedirs(out_dir, exist_ok=True)
    md_path, csv_path = os.path.join(out_dir, MARKDOWN_FILE), os.path.join(out_dir, CSV_FILE)
    write_text_atomic(md_path, render_markdown(rows, run_dir, exclude))
    with atomic_output(csv_path) as tmp:
        write_csv(rows, tmp)
    return rows, md_path, csv_path
