"""hpc_bert/model/optim.py: LAMB's update against numbers worked out by hand, BERT's groups."""
import math

import pytest
import torch

from hpc_bert.config.pretrain import OptimConfig
from hpc_bert.model.optim import Lamb, build_optimizer, parameter_groups


def one_step(w, g, **kw):
    p = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
    opt = Lamb([p], **kw)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    return p.detach().tolist(), opt


def test_first_step_by_hand():
    # step 1: m_hat = g, v_hat = g^2, so the Adam update is sign(g) = (1, 1), ||u|| = sqrt(2);
    # ||w|| = ||(3, 4)|| = 5, trust ratio 5 / sqrt(2); w <- w - lr * trust * u
    w, _ = one_step([3.0, 4.0], [1.0, 2.0], lr=0.1, betas=(0.9, 0.999), eps=0.0)
    step = 0.1 * 5 / math.sqrt(2)
    assert w == pytest.approx([3 - step, 4 - step], abs=1e-12)


def test_weight_decay_enters_the_update_and_the_trust_ratio():
    # u = sign(g) + 0.5 * w = (1 + 1.5, 1 + 2) = (2.5, 3); trust = 5 / ||u|| = 5 / sqrt(15.25)
    w, _ = one_step([3.0, 4.0], [1.0, 2.0], lr=0.1, betas=(0.9, 0.999), eps=0.0, weight_decay=0.5)
    trust = 5 / math.sqrt(2.5 ** 2 + 3 ** 2)
    assert w == pytest.approx([3 - 0.1 * trust * 2.5, 4 - 0.1 * trust * 3], abs=1e-12)


def test_second_step_uses_bias_corrected_moments():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.999), eps=0.0)
    g1, g2 = [1.0, 2.0], [2.0, -1.0]
    for g in (g1, g2):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    w1 = [3 - 0.1 * 5 / math.sqrt(2), 4 - 0.1 * 5 / math.sqrt(2)]
    m = [0.9 * 0.1 * a + 0.1 * b for a, b in zip(g1, g2)]
    v = [0.999 * 0.001 * a * a + 0.001 * b * b for a, b in zip(g1, g2)]
    u = [(mi / (1 - 0.9 ** 2)) / math.sqrt(vi / (1 - 0.999 ** 2)) for mi, vi in zip(m, v)]
    trust = math.hypot(*w1) / math.hypot(*u)
    assert p.detach().tolist() == pytest.approx([wi - 0.1 * trust * ui for wi, ui in zip(w1, u)], abs=1e-12)
    assert opt.state[p]["step"] == 2


def test_zero_weights_take_a_plain_adam_step():
    # ||w|| = 0 would make the ratio 0 and freeze the tensor forever: the ratio is 1 instead
    w, _ = one_step([0.0, 0.0], [1.0, -2.0], lr=0.1, betas=(0.9, 0.999), eps=0.0)
    assert w == pytest.approx([-0.1, 0.1], abs=1e-12)


def test_parameters_without_a_gradient_are_left_alone():
    p, q = (torch.nn.Parameter(torch.ones(2)) for _ in range(2))
    opt = Lamb([p, q], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()
    assert q.detach().tolist() == [1.0, 1.0] and q not in opt.state and p.detach().tolist() != [1.0, 1.0]


def test_build_optimizer_groups_and_types():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = parameter_groups(model, 0.01)
    assert [len(g["params"]) for g in groups] == [1, 3]  # the weight matrix decays; biases and the norm do not
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    lamb = build_optimizer(model, OptimConfig(optimizer_type="lamb", lr=2e-3, weight_decay=0.01))
    assert isinstance(lamb, Lamb) and [g["weight_decay"] for g in lamb.param_groups] == [0.01, 0.0]
    assert lamb.param_groups[0]["lr"] == 2e-3 and lamb.param_groups[0]["betas"] == (0.9, 0.98)
    assert isinstance(build_optimizer(model, OptimConfig(optimizer_type="adamw")), torch.optim.AdamW)
    assert type(build_optimizer(model, OptimConfig(optimizer_type="adam"))) is torch.optim.Adam
