"""Tests of the projection head and the linear probe head."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from contrastive.heads import LinearHead, ProjectionHead


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _of(module: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in module.layers if isinstance(m, kind)]


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_projection_head_structure_with_batch_norm(num_layers: int) -> None:
    head = ProjectionHead(input_dim=12, hidden_dim=20, output_dim=6, num_layers=num_layers)
    linears = _of(head, nn.Linear)
    assert len(linears) == num_layers
    dims = [(lin.in_features, lin.out_features) for lin in linears]
    widths = [12] + [20] * (num_layers - 1) + [6]
    assert dims == list(itertools.pairwise(widths))
    assert len(_of(head, nn.BatchNorm1d)) == num_layers - 1
    assert len(_of(head, nn.ReLU)) == num_layers - 1
    # A linear layer followed by BN has no bias; the output layer has one.
    assert all(lin.bias is None for lin in linears[:-1])
    assert linears[-1].bias is not None
    # Order: Linear, BN, ReLU repeated, then Linear.
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * (num_layers - 1) + [nn.Linear]
    assert head(torch.rand(5, 12, generator=_gen())).shape == (5, 6)
    assert head.output_dim == 6


def test_projection_head_without_batch_norm_is_an_mlp_with_biases() -> None:
    head = ProjectionHead(input_dim=4, hidden_dim=7, output_dim=3, num_layers=2, batch_norm=False)
    assert _of(head, nn.BatchNorm1d) == []
    first, last = _of(head, nn.Linear)
    assert first.bias is not None and last.bias is not None
    x = torch.randn(5, 4, generator=_gen())
    expected = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(head(x), expected)


def test_projection_head_batch_norm_last() -> None:
    head = ProjectionHead(input_dim=4, hidden_dim=8, output_dim=3, batch_norm_last=True)
    last_linear = _of(head, nn.Linear)[-1]
    assert last_linear.bias is None
    final = head.layers[-1]
    assert isinstance(final, nn.BatchNorm1d) and not final.affine
    assert final.num_features == 3
    out = head.train()(torch.randn(16, 4, generator=_gen()))
    # Affine-free BN in training mode: every output column has mean 0, (biased) variance 1.
    torch.testing.assert_close(out.mean(0), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(3), rtol=0, atol=1e-3)


def test_projection_head_rejects_zero_layers() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(input_dim=4, num_layers=0)


def test_linear_head_with_batch_norm_standardises_then_projects() -> None:
    head = LinearHead(6, 4, batch_norm=True).train()
    assert isinstance(head.norm, nn.BatchNorm1d) and not head.norm.affine
    x = torch.randn(10, 6, generator=_gen()) * 3 + 2
    standard = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + head.norm.eps)
    expected = standard @ head.linear.weight.T + head.linear.bias
    out = head(x)
    assert out.shape == (10, 4)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_linear_head_without_batch_norm_is_one_linear_layer() -> None:
    head = LinearHead(6, 4)
    assert isinstance(head.norm, nn.Identity)
    x = torch.randn(3, 6, generator=_gen())
    torch.testing.assert_close(head(x), x @ head.linear.weight.T + head.linear.bias)
