"""The cohort engine's faster kernels give torch's own bits (CPU float32).

Each substitution here is only allowed because it is exact: the transposed log-softmax
(hpconj/softmax.py) against torch's row kernel, the stacked forward pass in blocks of rows
against one product per trial over all rows, the in-place activations against autograd's.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpconj.engine import stacked
from hpconj.engine.stacked import (_cross_entropy_and_grad, layer_plan, stacked_logits, stacked_loss_and_grads,
                                   sub_stacks)
from hpconj.softmax import log_softmax_rows, transposed_agrees

CPU = torch.device("cpu")
AVX512 = torch.backends.cpu.get_cpu_capability() == "AVX512"


def _logits(rows: int, classes: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-3, 3, rows).unsqueeze(1)
    return torch.randn(rows, classes, generator=generator) * scale


@pytest.mark.skipif(not AVX512, reason="which class counts take the transposed kernel depends on the vector width")
def test_the_transposed_kernel_is_taken_for_fewer_classes_than_lanes():
    assert transposed_agrees(10, CPU) and transposed_agrees(2, CPU)
    assert not transposed_agrees(16, CPU) and not transposed_agrees(40, CPU)  # the row kernel sums in another order


@pytest.mark.parametrize("classes", [2, 3, 10, 16, 40])
def test_log_softmax_rows_gives_torchs_bits(classes):
    for rows in (1, 7, 1000, 8192):
        logits = _logits(rows, classes)
        assert torch.equal(log_softmax_rows(logits), torch.log_softmax(logits, 1))


@pytest.mark.parametrize("classes", [3, 10, 40])
def test_cross_entropy_gradient_gives_autograds_bits(classes):
    k, batch = 6, 37
    logits = _logits(k * batch, classes, seed=2).requires_grad_()
    targets = torch.randint(classes, (k * batch,), generator=torch.Generator().manual_seed(3))
    losses, grad = _cross_entropy_and_grad(logits.detach(), targets, k, batch)
    # the batch means as the engine always took them (their last bit may differ from nll_loss's
    # own reduction: see the tolerance policy of test_cohort.py); the gradients as autograd's
    picked = torch.log_softmax(logits.detach(), 1).gather(1, targets.view(-1, 1))
    assert torch.equal(losses, -picked.reshape(k, batch).mean(1))
    for trial in range(k):
        rows = slice(trial * batch, (trial + 1) * batch)
        loss = F.cross_entropy(logits[rows], targets[rows])
        (expected,) = torch.autograd.grad(loss, logits)
        assert losses[trial].item() == pytest.approx(loss.item(), rel=1e-6)
        assert torch.equal(grad[rows], expected[rows])


def test_non_finite_logits_give_non_finite_losses_in_the_same_rows():
    logits = _logits(64, 10)
    logits[3, 2] = float("inf")
    logits[5, 0] = float("nan")
    logits[9] = float("-inf")
    expected = torch.log_softmax(logits, 1)
    got = log_softmax_rows(logits)
    assert torch.equal(got.isfinite(), expected.isfinite())
    assert torch.equal(got[got.isfinite()], expected[expected.isfinite()])


def _stacked_mlps(dims: tuple[int, ...], activation: type[nn.Module], count: int):
    """`count` seeded MLPs with two hidden layers, their layer plan, and their parameters stacked [K, ...]."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(dims[0], dims[1]), activation(), nn.Linear(dims[1], dims[2]), activation(),
                            nn.Linear(dims[2], dims[3])) for _ in range(count)]
    names = [name for name, _ in models[0].named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n in names}
    return models, layer_plan(models[0], prefix=""), params


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.GELU])
def test_stacked_forward_in_blocks_of_rows_equals_each_models_own_forward(activation):
    models, layers, params = _stacked_mlps((12, 16, 16, 5), activation, 3)
    x = torch.randn(1000, 12)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in models])
    for rows in (7, 256, 5000):
        assert torch.equal(stacked_logits(layers, params, x, rows=rows), expected)


@pytest.mark.parametrize(("dims", "remainders"), [((64, 64, 64, 10), range(256)),
                                                  ((784, 128, 128, 10), [*range(20), 100, 255])])
def test_forward_blocks_give_the_same_bits_for_every_remainder(dims, remainders):
    """The last block absorbs the remainder: a block of a few rows would take another GEMM path."""
    models, layers, params = _stacked_mlps(dims, nn.ReLU, 2)
    x = torch.randn(1024 + 255, dims[0])
    with torch.no_grad():
        expected = torch.stack([m(x) for m in models])
    for remainder in remainders:
        n = 1024 + remainder
        assert torch.equal(stacked_logits(layers, params, x[:n]), expected[:, :n]), remainder


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.GELU])
def test_in_place_activations_give_autograds_gradients(activation):
    models, layers, params = _stacked_mlps((12, 16, 16, 5), activation, 2)
    names = list(params)
    x, y = torch.randn(2, 40, 12), torch.randint(5, (2, 40))
    grads = {n: torch.empty_like(p) for n, p in params.items()}
    losses = stacked_loss_and_grads(layers, params, x, y, 5, out=grads)
    for k, model in enumerate(models):
        loss = F.cross_entropy(model(x[k]), y[k])
        expected = torch.autograd.grad(loss, list(model.parameters()))
        assert losses[k].item() == pytest.approx(loss.item(), rel=1e-6)  # the batch mean: see above
        for name, value in zip(names, expected):
            assert torch.equal(grads[name][k], value), name


def test_sub_stacks_cover_the_stack_in_order_within_the_budget(monkeypatch):
    monkeypatch.setattr(stacked, "_SUB_STACK_BYTES", 3 * 4 * 10 * 16)  # three trials of [10, 16] floats
    assert sub_stacks(8, 10, 16, CPU) == [slice(0, 3), slice(3, 6), slice(6, 8)]
    assert sub_stacks(2, 10, 16, CPU) == [slice(0, 2)]
    assert sub_stacks(3, 1000, 16, CPU) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # at least one trial each
    assert sub_stacks(8, 10, 16, torch.device("cuda")) == [slice(0, 8)]  # one launch per layer on a GPU
    assert sub_stacks(0, 10, 16, CPU) == [slice(0, 0)]  # an empty stack is one empty part


@pytest.mark.parametrize("classes", [5, 0])
def test_sub_stacks_give_the_whole_stacks_bits(monkeypatch, classes):
    """Losses, gradients and q of a stack computed two trials at a time equal the whole stack's."""
    _, layers, params = _stacked_mlps((12, 16, 16, 5), nn.ReLU, 5)
    x = torch.randn(5, 40, 12)
    y = torch.randint(5, (5, 40)) if classes else torch.randn(5, 40, 5)

    def step() -> list:
        grads = {n: torch.empty_like(p) for n, p in params.items()}
        second = {n: torch.empty_like(p) for n, p in params.items()}
        return [stacked_loss_and_grads(layers, params, x, y, classes, out=grads, second=second), grads, second]

    whole = step()
    monkeypatch.setattr(stacked, "_SUB_STACK_BYTES", 2 * 4 * 40 * 16)
    assert len(sub_stacks(5, 40, 16, CPU)) == 3
    split = step()
    assert torch.equal(split[0], whole[0])
    for got, expected in zip(split[1:], whole[1:]):
        for name in params:
            assert torch.equal(got[name], expected[name]), name


def test_stacked_forward_in_sub_stacks_equals_each_models_own_forward(monkeypatch):
    models, layers, params = _stacked_mlps((12, 16, 16, 5), nn.ReLU, 5)
    x = torch.randn(1000, 12)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in models])
    monkeypatch.setattr(stacked, "_SUB_STACK_BYTES", 2 * 4 * 512 * 16)  # blocks of two trials
    assert len(sub_stacks(5, 512, 16, CPU)) == 3
    assert torch.equal(stacked_logits(layers, params, x, rows=256), expected)
