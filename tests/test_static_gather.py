"""The static MLM gather: a fixed row count per micro batch, the same loss as the dynamic gather."""
import torch

from hpc_bert.config.pretrain import ModelConfig
from hpc_bert.model.bert import IGNORE_INDEX, MaskedLM, build_hf_model, static_gather

VOCAB = 64


def tiny_model(max_predictions):
    cfg = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return MaskedLM(build_hf_model(cfg, VOCAB), max_predictions=max_predictions)


def batch(micro=4, seq=24, per_row=(5, 3, 0, 5), seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (micro, seq), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for r, k in enumerate(per_row):
        pos = torch.randperm(seq - 2, generator=g)[:k] + 1
        labels[r, pos] = ids[r, pos]
        ids[r, pos] = 4
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": labels}


def test_gather_has_a_fixed_size_and_keeps_masked_rows_in_order():
    hidden = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 4], labels[1, 1], labels[1, 5] = 7, 8, 9
    rows, got = static_gather(hidden, labels, slots=4)
    assert rows.shape == (4, 1) and got.shape == (4,)
    assert rows[:3, 0].tolist() == [4.0, 7.0, 11.0] and got[:3].tolist() == [7, 8, 9]
    assert got[3].item() == IGNORE_INDEX                      # padding is ignored by the loss


def test_static_loss_equals_dynamic_loss_and_gradients_match():
    b = batch()
    static, dynamic = tiny_model(max_predictions=5), tiny_model(max_predictions=None)
    dynamic.load_state_dict(static.state_dict())
    ls, ld = static(**b), dynamic(**b)
    assert torch.allclose(ls, ld, rtol=1e-6, atol=0), (ls.item(), ld.item())
    ls.backward()
    ld.backward()
    for (name, ps), pd in zip(static.named_parameters(), dynamic.parameters()):
        if ps.grad is not None or pd.grad is not None:
            assert torch.allclose(ps.grad, pd.grad, rtol=1e-5, atol=1e-7), name


def test_row_count_does_not_depend_on_how_many_are_masked():
    m = tiny_model(max_predictions=5)
    seen = []
    m.head_loss = lambda rows, labels: (seen.append(rows.shape), m._head_loss(rows, labels))[1]
    for per_row in ((5, 5, 5, 5), (1, 0, 2, 0), (3, 3, 3, 3)):
        m(**batch(per_row=per_row))
    assert seen == [torch.Size([20, 32])] * 3
