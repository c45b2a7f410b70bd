"""Test-set predictions and the GLUE server's zip.

A run fine-tuned with ``--do_predict`` writes one ``predictions_<split>.tsv`` per test split next
to its results.json (``index`` and ``prediction`` columns: label strings, STS-B scores). The zip
takes, per task, the run of the setting the table reports (best learning rate by median over
seeds, ``aggregate.choose_setting``) whose dev score is that median, and copies its files under
the server's names (CoLA.tsv ... MNLI-m.tsv, MNLI-mm.tsv, AX.tsv from the MNLI run). Tasks or
files that are missing are listed in one line; the zip holds the rest.
"""
from __future__ import annotations

import os
import sys
import zipfile
from typing import Sequence

from hpc_bert.atomic import atomic_output
from hpc_bert.errors import UserError
from hpc_bert.glue.aggregate import choose_setting, collect
from hpc_bert.glue.run_files import read_predictions
from hpc_bert.glue.tasks import SUBMISSION_FILES, TASK_ORDER, TASKS
from hpc_bert.layout import FINAL_NAME, predictions_name, submission_name

def median_run(runs: Sequence[dict]) -> dict:
    """The run whose dev score is the median of the chosen setting's seeds (the lower middle one
    for an even count, ties by seed), so the submitted model is the one the table reports."""
    ordered = sorted(runs, key=lambda r: (r["score"], int(r["seed"])))
    return ordered[(len(ordered) - 1) // 2]


def chosen_runs(records: Sequence[dict], checkpoint: str) -> dict[str, dict]:
    """{task: the median-seed run of its chosen setting} for one checkpoint row."""
    mine = [r for r in records if r["_checkpoint"] == checkpoint]
    if not mine:
        names = sorted({r["_checkpoint"] for r in records})
        raise UserError(f"no results for checkpoint {checkpoint!r}: pass --checkpoint with one of {', '.join(names)}")
    by_task: dict[str, list[dict]] = {}
    for rec in mine:
        by_task.setdefault(rec["task"], []).append(rec)
    return {t: median_run(choose_setting(t, by_task[t]).runs) for t in TASK_ORDER if t in by_task}


def build_zip(runs: dict[str, dict], output: str) -> tuple[list[str], list[str]]:
    """Write the server's zip; returns (files written, 'FILE (why)' for each one missing)."""
    entries, missing = {}, []
    for name in TASK_ORDER:
        run = runs.get(name)
        for test in TASKS[name].test_splits:
            if run is None:
                missing.append(f"{test.submission} (no {name} results)")
                continue
            path = os.path.join(run["_dir"], predictions_name(test.split))
            if not os.path.isfile(path):
                missing.append(f"{test.submission} (no {predictions_name(test.split)} in {run['_dir']}: "
                               "fine-tune with --do_predict)")
                continue
            read_predictions(path)  # a broken file fails here, not at the server
            entries[test.submission] = path
    if not entries:
        raise UserError("no test predictions to submit: " + "; ".join(missing))
    with atomic_output(output) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for submission in SUBMISSION_FILES:
            if submission in entries:
                zf.write(entries[submission], submission)
    return [s for s in SUBMISSION_FILES if s in entries], missing


def submission(run_dir: str, checkpoint: str = FINAL_NAME, output: str | None = None) -> str:
    runs = chosen_runs(collect(run_dir), checkpoint)
    output = output or os.path.join(run_dir, submission_name(checkpoint))
    if not output.endswith(".zip"):
        raise UserError(f"--output {output} must end in .zip (the GLUE server takes a zip)")
    written, missing = build_zip(runs, output)
    for name, run in runs.items():
        started = (run.get("start_from") or {}).get("task")
        print(f"hpc_bert: {name}: {run['_dir']} (lr {run['learning_rate']:g}, seed {run['seed']}, dev "
              f"{100 * run['score']:.2f}{', from ' + started if started else ''})", flush=True)
    if missing:
        print(f"hpc_bert: missing from the submission: {'; '.join(missing)}", file=sys.stderr, flush=True)
    print(f"hpc_bert: wrote {output} ({len(written)} of {len(SUBMISSION_FILES)} files)", flush=True)
    return output
