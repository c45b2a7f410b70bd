"""hpc_bert/pretrain/checkpoint.py directly: what counts as a complete checkpoint, pruning,
the RNG round trip, the free-space refusal, the size estimate and fine-tune dirs."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from hpc_bert.errors import UserError
from hpc_bert.layout import CHECKPOINT_META, CHECKPOINT_POINTER, CHECKPOINTS_DIR
from hpc_bert.pretrain import checkpoint as ck

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_saved(run_dir, step, complete=True, suffix=""):
    """A checkpoint folder as a save leaves it: meta.json is written last, so its absence means torn."""
    folder = os.path.join(run_dir, CHECKPOINTS_DIR, ck.tag_for(step) + suffix)
    os.makedirs(folder)
    if complete:
        with open(os.path.join(folder, CHECKPOINT_META), "w") as fh:
            json.dump({"tag": ck.tag_for(step), "step": step, "elapsed_s": float(step)}, fh)


def point_at(run_dir, text):
    with open(os.path.join(run_dir, CHECKPOINTS_DIR, CHECKPOINT_POINTER), "w") as fh:
        fh.write(text)


def test_find_latest_ignores_half_written_tags(tmp_path):
    run = str(tmp_path)
    assert ck.find_latest(run) is None
    fake_saved(run, 100)
    fake_saved(run, 200)
    fake_saved(run, 300, complete=False)          # torn: no meta.json
    fake_saved(run, 400, suffix=".partial")       # being written
    os.makedirs(os.path.join(run, CHECKPOINTS_DIR, "step_12"))  # not a tag
    assert ck.complete_checkpoints(run) == [ck.tag_for(100), ck.tag_for(200)]
    assert ck.find_latest(run)["step"] == 200
    point_at(run, json.dumps({"tag": ck.tag_for(300)}))  # a pointer to a torn folder is not followed
    assert ck.find_latest(run)["step"] == 200
    point_at(run, json.dumps({"tag": ck.tag_for(100)}))  # nor one left behind by a crash after the rename
    assert ck.find_latest(run)["step"] == 200
    point_at(run, '{"tag": ')                            # a damaged pointer falls back to scanning
    assert ck.find_latest(run)["step"] == 200


def test_rng_round_trip_through_a_rank_state_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    saved = ck.rng_state()
    torch.save({"rng": saved}, tmp_path / "rank_0_state.pt")
    first = (random.random(), np.random.rand(), torch.rand(3).tolist())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    ck.set_rng_state(torch.load(tmp_path / "rank_0_state.pt", weights_only=False)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(3).tolist()) == first


def test_free_space_refusal_is_one_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    ck.check_free_space(str(run), 1)
    with pytest.raises(UserError) as e:
        ck.check_free_space(str(run), 2 ** 62)
    msg = str(e.value)
    assert "\n" not in msg and str(run) in msg and "GiB free" in msg and "--output_dir" in msg
    assert os.listdir(run) == []


def test_checkpoint_size_from_the_real_parameter_count():
    from hpc_bert.config.pretrain import ModelConfig
    from hpc_bert.model.bert import build_hf_model, count_parameters, parameter_count
    cfg = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    n = parameter_count(cfg, 104)  # on the meta device
    assert n == count_parameters(build_hf_model(cfg, 104))
    assert ck.checkpoint_bytes(n) == 12 * n  # fp32 weights and two optimizer moments


def test_fine_tune_checkpoint_is_written_once_and_whole(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from pretrain_fixtures import write_vocab
    from hpc_bert.data.tokenizer import load_tokenizer
    write_vocab(str(tmp_path / "vocab.txt"))
    tok = load_tokenizer(str(tmp_path / "vocab.txt"))
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=16))
    run = str(tmp_path / "run")
    # leftovers of a crash: an incomplete final dir (no meta) and a temp dir
    os.makedirs(ck.finetune_dir(run, "final"))
    os.makedirs(ck.finetune_dir(run, "final") + ".tmp")
    assert not ck.finetune_checkpoint_exists(run, "final")
    path = ck.save_finetune_checkpoint(model, tok, run, "final", {"step": 3})
    assert ck.finetune_checkpoint_exists(run, "final") and not os.path.exists(path + ".tmp")
    assert BertForMaskedLM.from_pretrained(path).config.hidden_size == 8
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.add_(1.0)
    ck.save_finetune_checkpoint(model, tok, run, "final", {"step": 9})  # exists: kept as it was
    assert json.load(open(os.path.join(path, "hpc_bert_meta.json"))) == {"step": 3}


SAVE_AND_LOAD = r"""
import json, sys, torch, deepspeed
from hpc_bert.pretrain import checkpoint as ck
from hpc_bert.pretrain.distributed import DistEnv, init_distributed, shutdown
run, keep = sys.argv[1], int(sys.argv[2])
init_distributed(DistEnv(0, 1, 0, "127.0.0.1", int(sys.argv[3])))
def engine(seed):
    torch.manual_seed(seed)
    m = torch.nn.Linear(4, 3)
    return deepspeed.initialize(model=m, optimizer=torch.optim.AdamW(m.parameters(), lr=0.1),
                                config={"train_batch_size": 1, "train_micro_batch_size_per_gpu": 1,
                                        "steps_per_print": 10 ** 12, "zero_allow_untested_optimizer": True})[0]
eng, kept = engine(0), []
for step in range(1, 5):
    loss = eng(torch.ones(1, 4)).sum(); eng.backward(loss); eng.step()
    ck.save_training_checkpoint(eng, run, 0, step, {"step": step}, {"rng": ck.rng_state(), "step": step},
                                keep, lambda: 10.0 * step)
    kept.append(ck.complete_checkpoints(run))
again = ck.save_training_checkpoint(eng, run, 0, 4, {"step": 4}, {}, keep, lambda: 99.0)
fresh = engine(1)
meta = ck.find_latest(run)
state = ck.load_training_checkpoint(fresh, run, 0, meta["tag"], 1, 1)
same = all(torch.equal(a, b) for a, b in zip(eng.module.parameters(), fresh.module.parameters()))
print(json.dumps({"kept": kept, "again": again, "meta": meta, "rank_step": state["step"], "same": same}))
shutdown()
"""


@pytest.mark.slow
def test_save_prunes_to_keep_and_loads_back_with_deepspeed(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", SAVE_AND_LOAD, str(run), "2", str(29600 + os.getpid() % 300)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    tags = [ck.tag_for(s) for s in range(1, 5)]
    assert out["kept"] == [tags[:1], tags[:2], tags[1:3], tags[2:4]]  # the newest two survive
    assert out["again"] == tags[3] and out["meta"]["elapsed_s"] == 40.0  # a second save of a step is a no-op
    assert out["meta"]["tag"] == tags[3] and out["rank_step"] == 4 and out["same"]
    pointer = json.load(open(run / CHECKPOINTS_DIR / CHECKPOINT_POINTER))
    assert pointer == {"tag": tags[3], "step": 4, "elapsed_s": 40.0}
    assert sorted(os.listdir(run / CHECKPOINTS_DIR)) == sorted([*tags[2:], CHECKPOINT_POINTER])
