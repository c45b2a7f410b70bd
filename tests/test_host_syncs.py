"""The trainer's optimizer step waits for the device once: the boundary's agreement.

A real tiny BERT on the DeepSpeed engine (CPU, gloo, one rank); host syncs counted as
hpc_bert.testing.syncs defines them (what would stall a GPU's queue).
"""
import os

import pytest
import numpy as np
import torch

from hpc_bert.config.pretrain import ModelConfig
from hpc_bert.data.loader import Batch
from hpc_bert.model.bert import IGNORE_INDEX, MaskedLM, build_hf_model
from hpc_bert.testing.syncs import HostSyncCounter

pytestmark = pytest.mark.slow
ACCUM = 3


def batches(n, micro=4, seq=16, per_row=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(5, 64, (micro, seq), generator=g)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, 1:1 + per_row] = ids[:, 1:1 + per_row]
        mask = torch.ones_like(ids)
        mask[0, seq - 4:] = 0  # some padding
        out.append(Batch(0, i, False, {"input_ids": ids, "attention_mask": mask,
                                       "token_type_ids": torch.zeros_like(ids), "labels": labels},
                         np.arange(i * len(ids), (i + 1) * len(ids))))
    return iter(out)


@pytest.fixture(scope="module")
def engine():
    from hpc_bert.config.pretrain import OptimConfig
    from hpc_bert.model.optim import build_optimizer
    from hpc_bert.pretrain.distributed import DistEnv, init_distributed, shutdown
    saved = dict(os.environ)  # init_distributed exports RANK, WORLD_SIZE, MASTER_*: not for later tests
    init_distributed(DistEnv(0, 1, 0, "127.0.0.1", 29300 + os.getpid() % 500))
    cfg = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    model = MaskedLM(build_hf_model(cfg, 64), max_predictions=3)
    from hpc_bert.pretrain.engine import initialize_engine
    eng, _ = initialize_engine(model, build_optimizer(model, OptimConfig()), {
        "train_batch_size": 4 * ACCUM, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": ACCUM,
        "zero_optimization": {"stage": 0}, "steps_per_print": 10 ** 12, "zero_allow_untested_optimizer": True})
    eng.train()
    yield eng
    shutdown()
    os.environ.clear()
    os.environ.update(saved)


def test_one_host_sync_and_one_all_reduce_per_optimizer_step(engine):
    from hpc_bert.pretrain.distributed import agree_step
    from hpc_bert.pretrain.engine import accumulate
    source = batches(3 * ACCUM)
    accumulate(engine, source, ACCUM, "cpu")  # optimizer state exists from here on
    # torch AdamW's per-parameter step counters live on the host (off the fused CUDA path): not syncs
    counters = [s["step"] for s in engine.optimizer.state.values() if torch.is_tensor(s.get("step"))]
    with HostSyncCounter(host_tensors=counters) as inside:
        loss_sum, _, _ = accumulate(engine, source, ACCUM, "cpu")
    assert inside.total == 0 and inside.all_reduces == 0, dict(inside.syncs)
    with HostSyncCounter(host_tensors=counters) as boundary:
        code, elapsed, nonfinite = agree_step(2, 5.0, loss_sum, "cpu")
    assert dict(boundary.syncs) == {"Tensor.tolist": 1} and boundary.all_reduces == 1
    assert (code, elapsed, nonfinite) == (2, 5.0, False)
    # the counter does see a sync where one happens: the boolean-index (dynamic) gather
    engine.module.max_predictions = None
    try:
        with HostSyncCounter(host_tensors=counters) as dynamic:
            accumulate(engine, source, ACCUM, "cpu")
    finally:
        engine.module.max_predictions = 3
    assert dynamic.syncs["aten.index.Tensor"] >= ACCUM


def test_per_document_attention_adds_no_host_sync(engine):
    from hpc_bert.pretrain.engine import accumulate
    source = batches(2 * ACCUM)  # random ids in [5, 64): id 7 plays [SEP], a few boundaries per row
    engine.module.document_sep_id = 7
    try:
        accumulate(engine, source, ACCUM, "cpu")  # optimizer state exists from here on
        counters = [s["step"] for s in engine.optimizer.state.values() if torch.is_tensor(s.get("step"))]
        with HostSyncCounter(host_tensors=counters) as inside:
            accumulate(engine, source, ACCUM, "cpu")
    finally:
        engine.module.document_sep_id = None
    assert inside.total == 0 and inside.all_reduces == 0, dict(inside.syncs)
