"""The cheap CPU dropout keeps dropout's meaning: rate, scaling, gradients, attention, eval."""
import pytest
import torch
from torch import nn

from hpc_bert.config.pretrain import ModelConfig
from hpc_bert.model.cpu_dropout import CPUDropout, attention, drop, keep_mask, use_cpu_dropout
from hpc_bert.model.bert import build_hf_model


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_matches_p(p):
    torch.manual_seed(0)
    m = keep_mask(torch.Size([7, 100_003]), p)   # a size that is not a multiple of 3
    assert m.shape == (7, 100_003) and m.dtype == torch.bool
    # 700k Bernoulli draws: the standard error of the mean is below 0.0006
    assert m.float().mean().item() == pytest.approx(1 - p, abs=0.003)


def test_masks_are_independent_across_positions():
    torch.manual_seed(1)
    m = keep_mask(torch.Size([600_000]), 0.5).float()
    # neighbours (same 64-bit word or not) are uncorrelated
    for lag in (1, 2, 3, 4):
        assert torch.corrcoef(torch.stack([m[:-lag], m[lag:]]))[0, 1].abs() < 0.01


def test_forward_scales_and_backward_uses_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(50_000, requires_grad=True)
    y = drop(x, 0.3, True)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.7)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.7)


def test_same_seed_same_masks_and_eval_is_identity():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = drop(x, 0.1, True)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x, 0.1, True))
    d = CPUDropout(0.1).eval()
    assert torch.equal(d(x), x)
    assert torch.equal(drop(x, 0.0, True), x)


def test_attention_math_path_matches_sdpa_with_padding():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mask = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    mask[1, :, :, 6:] = False                       # second sequence: 4 padded keys
    module = nn.Module()
    module.is_causal = False
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    ours, _ = attention(module, q, k, v, mask, dropout=1e-9)  # rounds to keep-all, takes the math path
    assert ours.shape == ref.shape == (2, 10, 3, 8)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("ln_mode", ["post-ln", "pre-ln"])
def test_hf_models_keep_their_eval_outputs_and_save_plainly(tmp_path, ln_mode):
    from transformers import AutoModelForMaskedLM
    cfg = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64, encoder_ln_mode=ln_mode)
    torch.manual_seed(5)
    plain = build_hf_model(cfg, 128).eval()
    ids = torch.randint(5, 128, (2, 16))
    am = torch.ones_like(ids)
    am[1, 11:] = 0
    with torch.no_grad():
        before = plain(input_ids=ids, attention_mask=am).logits
    swapped = use_cpu_dropout(plain)
    assert not any(type(m) is nn.Dropout for m in swapped.modules())
    with torch.no_grad():
        assert torch.allclose(swapped(input_ids=ids, attention_mask=am).logits, before, atol=1e-5)
    swapped.train()
    loss = swapped(input_ids=ids, attention_mask=am, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    swapped.save_pretrained(tmp_path)   # the saved config names no custom attention
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids, attention_mask=am).logits, before, atol=1e-5)


def test_cpu_dropout_applies_on_cpu_only(monkeypatch):
    """Training on a GPU keeps the model as HF built it: nn.Dropout and its attention implementation."""
    from hpc_bert.model.bert import MaskedLM
    cfg = ModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    gpu_bound = use_cpu_dropout(build_hf_model(cfg, 128), on_cpu=False)
    assert any(type(m) is nn.Dropout for m in gpu_bound.modules())
    assert not any(isinstance(m, CPUDropout) for m in gpu_bound.modules())
    assert gpu_bound.config._attn_implementation == "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the trainer's device choice: CUDA
    assert not any(isinstance(m, CPUDropout) for m in MaskedLM(build_hf_model(cfg, 128)).modules())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert any(isinstance(m, CPUDropout) for m in MaskedLM(build_hf_model(cfg, 128)).modules())
