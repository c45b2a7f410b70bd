"""hpc_bert/launch/jobs.py: the pretraining job's mapping of the trainer's exit status."""
import os

import pytest

from hpc_bert.errors import EXIT_REQUEUE, EXIT_USER_ERROR
from hpc_bert.launch.jobs import DONE, REQUEUE, JobFailed, PretrainJob, after_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_done_and_requeue():
    assert after_training(0, 0, 3) == DONE
    assert after_training(0, 9, 3) == DONE  # done is done, however many allocations it took
    assert after_training(EXIT_REQUEUE, 1, 3) == REQUEUE  # the first allocation asks for the first requeue
    assert after_training(EXIT_REQUEUE, 3, 3) == REQUEUE  # two requeues ran, a third is allowed
    assert after_training(EXIT_REQUEUE, 0, 1) == REQUEUE  # no ledger yet (stopped before training)


def test_requeue_limit_fails_the_job():
    with pytest.raises(JobFailed, match="requeue limit 3 reached before the budget was spent: resubmit") as e:
        after_training(EXIT_REQUEUE, 4, 3)
    assert e.value.status == 1 and e.value.line.startswith("requeue limit 3")
    with pytest.raises(JobFailed, match="requeue limit 0"):
        after_training(EXIT_REQUEUE, 1, 0)


@pytest.mark.parametrize("rc,status", [(1, 1), (EXIT_USER_ERROR, EXIT_USER_ERROR), (3, 3), (-9, 1)])
def test_other_statuses_fail_the_job(rc, status):
    """A failed job is what makes SLURM kill the afterok GLUE array; the trainer printed its own line."""
    with pytest.raises(JobFailed) as e:
        after_training(rc, 1, 5)
    assert e.value.status == status and e.value.line is None


@pytest.mark.slow
def test_pretrain_job_in_a_local_executor(tmp_path):
    """The real path: submitit runs the pickled job, the trainer exits 2 (no dataset), the job fails;
    on a finished run dir the trainer exits 0 and so does the job."""
    import submitit

    from pretrain_fixtures import tiny_flags, train, vocab_and_shards
    shards, vocab = vocab_and_shards(tmp_path / "inputs", per_shard=16)
    run = str(tmp_path / "run")
    ex = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    ex.update_parameters(timeout_min=5)
    bad = ex.submit(PretrainJob(["--config", "configs/pretrain/tiny.yaml", "--output_dir", run, "--dataset_path",
                                 str(tmp_path / "missing"), "--tokenizer_name", vocab], run, 3, REPO))
    with pytest.raises(Exception):
        bad.result()
    log = open(bad.paths.stderr).read()
    assert log.strip().splitlines()[-1].startswith("hpc_bert: error: ") and "does not exist" in log.splitlines()[-1]
    assert "Traceback" not in log  # the log ends with the one line that matters
    flags = tiny_flags(run, shards, vocab, 0.0005, clock="simulated", simulated_step_seconds=0.2)
    assert train(flags).returncode == 0  # spends the whole (simulated) budget
    done = ex.submit(PretrainJob(["--config", "configs/pretrain/tiny.yaml", *flags], run, 3, REPO))
    assert done.result() == 0
    assert "training already finished" in open(done.paths.stderr).read()
