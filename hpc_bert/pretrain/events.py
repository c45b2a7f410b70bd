"""Observability: RUN_DIR/metrics.jsonl, TensorBoard scalars, the run dir's W&B run
(``--report_to ...,wandb``, see wandb_run.py) and a tqdm budget bar.

Only rank 0 writes. Every event carries step, elapsed_s, progress, lr, loss (when known)
and the wall time, so a run split over allocations reads as one timeline.
"""
from __future__ import annotations

import json
import os
import sys
import time

from hpc_bert.layout import METRICS_NAME, TENSORBOARD_DIR, read_events  # noqa: F401  (readers import it here too)
from hpc_bert.pretrain.wandb_run import WandbRun
from hpc_bert.pretrain.clock import budget_progress


class EventLog:
    def __init__(self, run_dir: str, enabled: bool, budget_s: float, tensorboard: bool = True,
                 progress_bar: bool = True, wandb: dict | None = None):
        """``wandb``: None, or WandbRun's arguments (project, name, entity, config)."""
        self.enabled = enabled
        self.budget_s = budget_s
        self._fh = None
        self._tb = None
        self._bar = None
        self._wandb = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._fh = open(os.path.join(run_dir, METRICS_NAME), "ab", buffering=0)  # unbuffered: see _append
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(os.path.join(run_dir, TENSORBOARD_DIR))
            except ImportError:  # tensorboard is optional at run time
                self._tb = None
        if wandb is not None:
            self._wandb = WandbRun(run_dir, **wandb)
        if progress_bar and sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=1000, desc="budget", unit="‰", dynamic_ncols=True)

    def emit(self, event: str, step: int, elapsed_s: float, **fields) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": step, "elapsed_s": round(elapsed_s, 6),
                  "progress": round(budget_progress(elapsed_s, self.budget_s), 9), "wall": time.time(), **fields}
        self._append((json.dumps(record) + "\n").encode())
        if self._tb is not None:
            hours = elapsed_s / 3600.0
            for key in ("loss", "lr", "samples_per_s", "tokens_per_s", "tokens_seen", "mfu", "val_loss"):
                if record.get(key) is not None:
                    self._tb.add_scalar(f"{key}/by_step", record[key], step)
                    # TensorBoard's x axis must be an int: budget time in milli-hours
                    self._tb.add_scalar(f"{key}/by_budget_millihours", record[key], int(hours * 1000))
            self._tb.add_scalar("progress", record["progress"], step)
        if self._wandb is not None:
            self._wandb.log(record)
        if self._bar is not None:
            self._bar.n = min(1000, int(record["progress"] * 1000))
            if record.get("loss") is not None:
                self._bar.set_postfix(loss=f"{record['loss']:.3f}", step=step, refresh=False)
            self._bar.refresh()

    def _append(self, line: bytes) -> None:
        """One whole line or nothing: a write that fails part way (a full disk) is cut back off,
        so the file never holds a torn line that the next one would run into."""
        size = self._fh.seek(0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[self._fh.write(view):]
        except OSError:
            os.ftruncate(self._fh.fileno(), size)
            raise

    def stopping(self, step: int, elapsed_s: float, reason: str, cause: str) -> None:
        """The allocation ends early (signal or deadline) and will be requeued: recorded before the save."""
        self.emit("stop_requested", step, elapsed_s, reason=reason, cause=cause)
        if self._wandb is not None:
            self._wandb.mark_preempting()

    def close(self, exit_code: int = 0) -> None:
        if self._wandb is not None:
            self._wandb.finish(exit_code)
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._fh is not None:
            self._fh.close()
