"""Throughput in the run: samples/s, real tokens/s, tokens seen (across a resume) and MFU, read
from metrics.jsonl of a real tiny run, and what status shows of them."""
import glob

import h5py
import numpy as np
import pytest

from hpc_bert.config.pretrain import ModelConfig
from hpc_bert.launch.status import main as status_main, render
from hpc_bert.launch.throughput_report import allocation_throughput
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.layout import read_events
from hpc_bert.model.flops import mfu, peak_tflops_for, training_flops_per_token
from pretrain_fixtures import simulated_flags, train

STEP_S = 10.0
STEPS = 10  # 2 epochs: 2 train shards of 40 samples = 80 samples = 5 steps of 16
HOURS = STEPS * STEP_S / 3600


def shard_real_tokens(shards_dir: str) -> int:
    """Real tokens (input_mask ones) of all train shards: one epoch's tokens."""
    return sum(int(np.asarray(h5py.File(p)["input_mask"]).sum())
               for p in sorted(glob.glob(f"{shards_dir}/train_shard_*.hdf5")))


@pytest.mark.slow
def test_train_events_carry_tokens_seen_across_a_resume(tmp_path, inputs):
    run = tmp_path / "run"
    flags = simulated_flags(run, inputs, HOURS, STEP_S, peak_tflops=0.5)
    first = train(flags, env_extra={"HPC_BERT_FAULTS": "usr2@step:4"})
    assert first.returncode == 75, first.stderr[-3000:]
    second = train(flags)
    assert second.returncode == 0, second.stderr[-3000:]
    events = read_events(str(run))
    steps = {e["step"]: e for e in events if e["event"] == "train"}  # a resumed step's event wins
    assert sorted(steps) == list(range(1, STEPS + 1))
    per_epoch = shard_real_tokens(inputs[0])
    batch, samples_per_epoch, seq_len = 16, 80, 32
    # every sample is seen once per epoch, so 10 steps x 16 samples = 2 epochs of the shards' real tokens
    assert steps[STEPS]["tokens_seen"] == STEPS * batch * per_epoch / samples_per_epoch == 2 * per_epoch
    assert steps[5]["tokens_seen"] == per_epoch
    assert per_epoch < samples_per_epoch * seq_len  # padding is excluded
    resumed = [e for e in events if e["event"] == "allocation_start"][1]
    assert resumed["tokens_seen"] == steps[4]["tokens_seen"] > 0  # restored from the checkpoint
    for e in steps.values():
        assert e["samples_per_s"] > 0 and e["tokens_per_s"] > 0
        assert 0 < e["mfu"] < 1  # --peak_tflops given: MFU on CPU too
        tokens_per_sample = e["tokens_per_s"] / e["samples_per_s"]
        assert seq_len / 2 <= tokens_per_sample <= seq_len  # the shards' rows hold 16..32 real tokens
    per = allocation_throughput(events, Ledger.load(str(run)))
    assert [a["tokens"] for a in per] == [steps[4]["tokens_seen"], 2 * per_epoch - steps[4]["tokens_seen"]]
    assert all(a["tokens_per_s"] > 0 for a in per)
    text = render(str(run))
    assert f"tokens seen: {2 * per_epoch}" in text
    assert "allocation 0:" in text and "allocation 1:" in text and "tokens/s" in text
    assert status_main([str(run), "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0


def test_no_mfu_on_cpu_without_a_peak_and_known_gpus_have_one():
    assert mfu(1000.0, 1e9, None, 1) is None
    assert peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops_for("NVIDIA L40S") == 362.0 and peak_tflops_for("NVIDIA L4") == 121.0
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops_for("Tesla V100-SXM2-32GB") == 125.0
    assert peak_tflops_for("Some CPU") is None
    assert mfu(1e6, 1e9, 1000.0, 2) == pytest.approx(0.5)


def test_bert_large_costs_about_six_flops_per_parameter_per_token():
    large = ModelConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    flops = training_flops_per_token(large, 30528, 128, 20 / 128)
    encoder_params = 24 * (4 * 1024 ** 2 + 2 * 1024 * 4096)  # matmul weights, ~302M
    assert 6 * encoder_params < flops < 6.3 * encoder_params  # plus attention over 128 and the sparse head
