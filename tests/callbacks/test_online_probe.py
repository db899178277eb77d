"""The online linear probe callback: its head comes back from a checkpoint."""

from __future__ import annotations

from typing import Any

import torch


def test_online_probe_restores_its_head_from_a_checkpoint() -> None:
    from types import SimpleNamespace

    from contrastive.callbacks import OnlineLinearProbe

    module: Any = SimpleNamespace(feature_dim=4, device=torch.device("cpu"))
    source = OnlineLinearProbe(num_classes=3)
    source.setup(None, module, "fit")  # type: ignore[arg-type]
    assert source.head is not None
    with torch.no_grad():
        for param in source.head.parameters():
            param.normal_()
    state = source.state_dict()
    # As on resume: Lightning calls setup() before it restores callback state.
    target = OnlineLinearProbe(num_classes=3)
    target.setup(None, module, "fit")  # type: ignore[arg-type]
    target.load_state_dict(state)
    target.on_fit_start(None, module)  # type: ignore[arg-type]
    assert target.head is not None
    for restored, saved in zip(target.head.parameters(), source.head.parameters(), strict=True):
        assert torch.equal(restored, saved)
