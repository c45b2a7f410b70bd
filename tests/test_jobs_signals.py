"""A finished pretraining job must survive a time-limit signal that arrives while it exits.

Seen in CI: the budget ended in the same second as the allocation's SIGUSR2 warning; Python had
already reset its handlers to the default during shutdown, the job died of the signal, SLURM
marked it failed and cancelled the afterok GLUE array."""
import signal
import subprocess
import sys

import pytest

# An atexit hook runs during interpreter shutdown: it sends the signal the scheduler would send.
# CPython resets Python-level handlers to SIG_DFL late in finalization (after atexit), so the
# control case sets SIG_DFL itself to stand for that moment; SIG_IGN is kept through finalization.
LATE_SIGNAL = """
import atexit, os, signal, sys
from hpc_bert.launch.jobs import ignore_late_stop_signals
signal.signal(signal.SIG{sig}, signal.SIG_DFL)
if sys.argv[1] == "fixed":
    ignore_late_stop_signals()
atexit.register(lambda: os.kill(os.getpid(), signal.SIG{sig}))
"""


@pytest.mark.parametrize("sig", ["USR2", "TERM"])
def test_late_signal_after_success_does_not_kill_the_job(sig):
    code = LATE_SIGNAL.format(sig=sig)
    fixed = subprocess.run([sys.executable, "-c", code, "fixed"], timeout=60)
    assert fixed.returncode == 0
    unfixed = subprocess.run([sys.executable, "-c", code, "unfixed"], timeout=60)
    assert unfixed.returncode == -getattr(signal, "SIG" + sig)  # the failure the fix prevents
