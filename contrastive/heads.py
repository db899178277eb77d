"""Heads on top of backbone features: the SimCLR projection MLP and the linear probe."""

from __future__ import annotations

from torch import Tensor, nn


def output_dim(head: nn.Module) -> int:
    """The width of ``head``'s output: its ``output_dim``, else its last linear layer's."""
    width = getattr(head, "output_dim", None)
    if isinstance(width, int):
        return width
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot tell the output width of {type(head).__name__}")
    return linears[-1].out_features


class ProjectionHead(nn.Module):
    """SimCLR projection MLP: ``[Linear -> BN -> ReLU] x (num_layers - 1) -> Linear``.

    With ``batch_norm_last=True`` a final affine-free BatchNorm follows the last layer
    (SimCLR v2). ``(B, input_dim) -> (B, output_dim)``.

    Examples:
        >>> import torch
        >>> head = ProjectionHead(input_dim=16, hidden_dim=32, output_dim=8)
        >>> tuple(head(torch.zeros(4, 16)).shape)
        (4, 8)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 512,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        batch_norm_last: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, output_dim, bias=not batch_norm_last))
        if batch_norm_last:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        self.layers = nn.Sequential(*layers)
        self.output_dim = output_dim

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)


class LinearHead(nn.Module):
    """A linear classifier or regressor on frozen features: ``(B, D) -> (B, num_outputs)``.

    Examples:
        >>> import torch
        >>> tuple(LinearHead(16, 10)(torch.zeros(3, 16)).shape)
        (3, 10)
    """

    def __init__(self, input_dim: int, num_outputs: int, batch_norm: bool = False) -> None:
        super().__init__()
        # An affine-free BN before the linear layer standardises features (as in MAE's
        # linear probe) and makes one learning rate work across backbones.
        self.norm: nn.Module = (
            nn.BatchNorm1d(input_dim, affine=False) if batch_norm else nn.Identity()
        )
        self.linear = nn.Linear(input_dim, num_outputs)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.norm(features))
