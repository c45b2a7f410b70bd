"""Per-document attention in packed rows: what one document sees of another, and what stays as before.

Real tiny models (pre-LN and post-LN), fp32 on CPU. Document boundaries come from the rows'
own [SEP] tokens; tolerances are fp32 round-off (1e-6 absolute on logits of order 1; on this
CPU the logits of the untouched document come out bit-identical).
"""
import os
from types import SimpleNamespace

import pytest
import torch

from hpc_bert.config.pretrain import ModelConfig
from hpc_bert.errors import ConfigError, UserError
from hpc_bert.model.bert import IGNORE_INDEX, MaskedLM, build_hf_model
from hpc_bert.model.doc_attention import document_ids, document_positions, mask_and_positions
from hpc_bert.pretrain.loop import document_sep_id
from pretrain_fixtures import tiny_flags, train, write_shards, write_vocab

VOCAB, CLS, SEP, MASK = 64, 2, 3, 4
ROUND_OFF = 1e-6
# [CLS] doc 1 (6 tokens + [SEP]) doc 2 (8 tokens + [SEP]) doc 3 (3 tokens) [SEP] padding
DOC1, DOC2 = slice(1, 8), slice(8, 17)
ROW = [CLS, 10, 11, 12, 13, 14, 15, SEP, 20, 21, 22, 23, 24, 25, 26, 27, SEP, 30, 31, 32, SEP, 0, 0, 0]


def tiny(ln_mode: str, scope_sep: int | None, kernel: str = "sdpa") -> MaskedLM:
    cfg = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      encoder_ln_mode=ln_mode)
    torch.manual_seed(0)
    return MaskedLM(build_hf_model(cfg, VOCAB), max_predictions=None, document_sep_id=scope_sep,
                    attention_kernel=kernel).eval()


def batch(row=ROW, masked=(), replaced_by=MASK):
    ids = torch.tensor([row])
    labels = torch.full_like(ids, IGNORE_INDEX)
    for p in masked:
        labels[0, p] = ids[0, p]
        ids[0, p] = replaced_by
    return {"input_ids": ids, "attention_mask": (torch.tensor([row]) != 0).long(),
            "token_type_ids": torch.zeros_like(ids), "labels": labels}


def mlm_logits(model: MaskedLM, b: dict) -> torch.Tensor:
    """[L, vocab] logits of every position, through the same mask and positions the loss uses."""
    mask, positions = b["attention_mask"], None
    if model.document_sep_id is not None:
        mask, positions = mask_and_positions(b["input_ids"], b["labels"] != IGNORE_INDEX, mask,
                                             model.document_sep_id, model.attention_kernel, model.position_offset)
    with torch.no_grad():
        return model.head(model.encode(b["input_ids"], mask, b["token_type_ids"], positions))[0]


def test_documents_and_positions_come_from_the_rows_sep_tokens():
    b = batch(masked=(12,), replaced_by=SEP)  # a masked position showing [SEP] (a random replacement)
    doc = document_ids(b["input_ids"], b["labels"] != IGNORE_INDEX, b["attention_mask"], SEP)[0]
    assert doc.tolist() == [0] * 8 + [1] * 9 + [2] * 4 + [0] * 3
    assert document_positions(doc[None])[0, :21].tolist() == list(range(8)) + list(range(9)) + list(range(4))


@pytest.mark.parametrize("ln_mode", ["pre-ln", "post-ln"])
def test_changing_document_one_leaves_document_two_unchanged(ln_mode):
    other = list(ROW)
    other[DOC1] = [40, 41, 42, 43, 44, 45, SEP]  # every token of document 1 (its [SEP] ends it still)
    other[1] = 50
    per_doc = tiny(ln_mode, SEP)
    a, b = mlm_logits(per_doc, batch(ROW, masked=(3, 10))), mlm_logits(per_doc, batch(other, masked=(3, 10)))
    assert (a[DOC2] - b[DOC2]).abs().max() <= ROUND_OFF
    assert (a[DOC1] - b[DOC1]).abs().max() > 100 * ROUND_OFF  # the change is real: document 1's own logits move
    per_row = tiny(ln_mode, None)  # today's behaviour: document 2 sees document 1
    a, b = mlm_logits(per_row, batch(ROW, masked=(3, 10))), mlm_logits(per_row, batch(other, masked=(3, 10)))
    assert (a[DOC2] - b[DOC2]).abs().max() > 100 * ROUND_OFF


@pytest.mark.parametrize("ln_mode", ["pre-ln", "post-ln"])
def test_an_unpacked_row_gives_the_same_logits_and_loss_as_before(ln_mode):
    row = [CLS] + list(range(10, 25)) + [SEP] + [0] * 7  # one document and padding
    per_doc, per_row = tiny(ln_mode, SEP), tiny(ln_mode, None)
    b = batch(row, masked=(2, 5, 9))
    real = slice(0, 17)
    assert (mlm_logits(per_doc, b)[real] - mlm_logits(per_row, b)[real]).abs().max() <= ROUND_OFF
    assert abs(per_doc(**b).item() - per_row(**b).item()) <= ROUND_OFF


def test_flex_kernel_gives_the_sdpa_logits():
    sdpa, flex = tiny("pre-ln", SEP, "sdpa"), tiny("pre-ln", SEP, "flex")
    b = batch(masked=(3, 10))
    real = slice(0, 21)
    assert (mlm_logits(sdpa, b)[real] - mlm_logits(flex, b)[real]).abs().max() <= 1e-5


def test_flex_trains_on_cuda_without_attention_dropout_only():
    info = SimpleNamespace(packing="full_sentences", special_ids={"sep_token_id": SEP})
    with pytest.raises(UserError, match="CUDA only"):
        document_sep_id(ModelConfig(attention_kernel="flex", attention_probs_dropout_prob=0.0), info, None, "cpu")
    with pytest.raises(UserError, match="attention_probs_dropout_prob 0"):
        document_sep_id(ModelConfig(attention_kernel="flex"), info, None, "cuda:0")
    flex = ModelConfig(attention_kernel="flex", attention_probs_dropout_prob=0.0)
    assert document_sep_id(flex, info, None, "cuda:0") == SEP
    with pytest.raises(ConfigError, match="attention_scope document or auto"):
        ModelConfig(attention_kernel="flex", attention_scope="row")


def test_auto_scope_follows_the_shards_packing():
    cfg = ModelConfig()
    assert cfg.document_attention("full_sentences") and not cfg.document_attention("doc_sentences")
    assert not cfg.document_attention(None)  # ABB's files record no packing: its two-segment rows stay whole
    assert not ModelConfig(attention_scope="row").document_attention("full_sentences")
    assert ModelConfig(attention_scope="document").document_attention(None)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["auto", "row"])
def test_a_checkpoint_trained_either_way_loads_in_transformers(tmp_path, scope):
    from transformers import AutoModelForMaskedLM
    vocab = str(tmp_path / "vocab.txt")
    data = str(tmp_path / "shards")
    write_shards(data, write_vocab(vocab), per_shard=24, packing="full_sentences")
    run = str(tmp_path / "run")
    r = train(tiny_flags(run, data, vocab, 12 * 10.0 / 3600, clock="simulated", simulated_step_seconds=10.0,
                         finetune_checkpoint_at_end="true", attention_scope=scope))
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("attention per document" if scope == "auto" else "attention per row") in r.stderr
    model = AutoModelForMaskedLM.from_pretrained(os.path.join(run, "finetune_checkpoints", "final"))
    ids = torch.tensor([ROW])
    out = model(input_ids=ids, attention_mask=(ids != 0).long())
    assert out.logits.shape == (1, len(ROW), model.config.vocab_size) and torch.isfinite(out.logits).all()
