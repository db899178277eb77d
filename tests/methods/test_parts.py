"""The parts the methods are built from: the queue, the momentum encoder and its shuffled
BatchNorm, NNCLR's nearest neighbours, and the 2-rank behaviour of the queue and shuffle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn

from contrastive.errors import ConfigError
from contrastive.methods.momentum import (
    MomentumEncoder,
    check_momentum,
    grouped,
    key_forward,
    momentum_at,
    resolve_shuffle_bn,
)
from contrastive.methods.nnclr import nearest_neighbours
from contrastive.methods.queue import EmbeddingQueue
from tests.helpers.gloo import launch

# --- the queue ---------------------------------------------------------------------------


def test_the_queue_is_a_fifo_ring_in_its_state_dict() -> None:
    ring = EmbeddingQueue(6, 2)
    assert ring.entries().shape == (0, 2)  # nothing stands in for keys not yet pushed
    for value in range(4):  # 4 pushes of 2 keys into 6 rows: the first push is overwritten
        ring.push(torch.full((2, 2), float(value)))
    assert int(ring.pointer) == 2 and int(ring.filled) == 6
    assert ring.queue[:, 0].tolist() == [3, 3, 1, 1, 2, 2]
    assert set(ring.state_dict()) == {"queue", "pointer", "filled"}  # persistent
    restored = EmbeddingQueue(6, 2)
    restored.load_state_dict(ring.state_dict())
    assert torch.equal(restored.queue, ring.queue) and int(restored.pointer) == 2
    restored.push(torch.full((2, 2), 9.0))
    ring.push(torch.full((2, 2), 9.0))
    assert torch.equal(restored.queue, ring.queue)


def test_a_queue_that_is_not_a_multiple_of_the_global_batch_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"queue_length=1000 is not a multiple of the global "
        r"batch 256 .* e\.g\. method\.queue_length=1024",
    ):
        EmbeddingQueue(1000, 8).check(256)
    with pytest.raises(ConfigError, match=r"shorter than one step's 512 keys"):
        EmbeddingQueue(256, 8).check(256, keys_per_image=2)
    EmbeddingQueue(1024, 8).check(256, keys_per_image=2)  # fine


def test_keys_are_written_without_their_graph() -> None:
    ring = EmbeddingQueue(4, 3)
    keys = torch.randn(2, 3, requires_grad=True)
    ring.push(keys * 2)
    assert not ring.queue.requires_grad
    torch.testing.assert_close(ring.entries(), (keys * 2).detach())


# --- the momentum encoder ------------------------------------------------------------------


def test_the_ema_update_is_exactly_m_key_plus_one_minus_m_online() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    key = MomentumEncoder({"net": online}, momentum=0.9)
    before = [p.detach().clone() for p in key.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    assert key.update({"net": online}, step=3, total_steps=10) == 0.9
    for old, new, target in zip(before, key.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * target, rtol=1e-12, atol=1e-12)
    assert not any(p.requires_grad for p in key.parameters())  # never in an optimiser
    assert all(k.startswith("encoder.net.") for k in key.state_dict())  # in checkpoints


def test_the_cosine_momentum_schedule_runs_from_its_start_to_its_end() -> None:
    assert momentum_at(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert momentum_at(70, 100, 0.999, None) == 0.999
    expected = 1 - 0.01 * (math.cos(math.pi * 0.25) + 1) / 2
    assert momentum_at(25, 100, 0.99, 1.0) == pytest.approx(expected)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_momentum_outside_0_1_is_refused(value: float) -> None:
    with pytest.raises(
        ValueError, match=rf"method.momentum must be a momentum in \[0, 1\], got {value}"
    ):
        check_momentum("method.momentum", value)
    with pytest.raises(ValueError, match="shuffle_bn must be one of"):
        resolve_shuffle_bn("sometimes", 1)


def bn_encoder() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()


def test_sub_batch_shuffling_returns_each_key_in_its_images_place() -> None:
    """Without BatchNorm statistics (eval mode) the shuffle must change nothing: every key
    comes back in its image's row. The negative control forgets to undo the permutation."""
    encoder = bn_encoder().eval()
    images = torch.randn(16, 5, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    shuffled = key_forward(encoder, images, "sub_batches", 4, generator)
    torch.testing.assert_close(shuffled, encoder(images), rtol=1e-12, atol=1e-12)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    unshuffled_not = grouped(encoder, images[order], 4)  # the permutation not undone
    assert not torch.allclose(unshuffled_not, encoder(images))


def test_sub_batch_shuffling_normalises_each_key_with_other_images() -> None:
    """In training mode each key's BatchNorm statistics are those of its shuffled
    sub-batch: equal to running the encoder on that sub-batch alone, not on the batch."""
    encoder = bn_encoder().train()
    images = torch.randn(16, 5, dtype=torch.float64)
    keys = key_forward(encoder, images, "sub_batches", 4, torch.Generator().manual_seed(3))
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    for chunk in order.chunk(4):
        torch.testing.assert_close(keys[chunk], encoder(images[chunk]), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(keys, encoder(images))


def test_a_push_with_a_non_finite_key_is_dropped_whole() -> None:
    ring = EmbeddingQueue(4, 2)
    ring.push(torch.ones(2, 2))
    ring.push(torch.tensor([[float("nan"), 0.0], [1.0, 1.0]]))  # a step the NaN guard skips
    assert int(ring.filled) == 2 and int(ring.pointer) == 2
    assert torch.isfinite(ring.queue).all()


def test_auto_shuffle_is_off_where_the_batchnorms_are_synchronised() -> None:
    plain = MomentumEncoder(
        {"net": nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))}, shuffle_bn="auto"
    )
    assert plain.shuffle_mode(2) == "ranks" and plain.shuffle_mode(1) == "sub_batches"
    synced = MomentumEncoder(
        {"net": nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(2)))},
        shuffle_bn="auto",
    )
    assert synced.shuffle_mode(2) == "none" and synced.online_groups(2, 2) == 1
    chosen = MomentumEncoder({"net": nn.Sequential(nn.BatchNorm1d(2))}, shuffle_bn="sub_batches")
    assert chosen.shuffle_mode(2) == "sub_batches"  # an explicit choice is kept


def test_the_ema_moves_once_per_optimiser_step_under_gradient_accumulation() -> None:
    """Micro-batches of one step share its EMA update; the next step moves it again."""
    from types import SimpleNamespace

    from contrastive.methods.moco_v2 import update_keys

    backbone, head = nn.Linear(3, 3), nn.Linear(3, 2)
    encoder = MomentumEncoder({"backbone": backbone, "projection_head": head}, momentum=0.5)
    method = SimpleNamespace(
        momentum_encoder=encoder, backbone=backbone, projection_head=head, global_step=0
    )
    with torch.no_grad():
        backbone.weight.add_(1.0)
    update_keys(method)
    after_first = encoder.encoder.backbone.weight.clone()
    update_keys(method)  # the second micro-batch of step 0
    assert torch.equal(encoder.encoder.backbone.weight, after_first)
    method.global_step = 1
    update_keys(method)
    assert not torch.equal(encoder.encoder.backbone.weight, after_first)


def test_nearest_neighbours_are_the_most_similar_support_rows() -> None:
    torch.manual_seed(0)
    support = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(7, 8), dim=1)
    found = nearest_neighbours(queries, support)
    for query, neighbour in zip(queries, found, strict=True):
        best = max(range(50), key=lambda j: float(query @ support[j]))
        assert torch.equal(neighbour, support[best])
    assert torch.equal(nearest_neighbours(queries, support[:0]), queries)  # empty support


# --- two gloo ranks ------------------------------------------------------------------------


def _two_rank_task(rank: int, world: int) -> dict[str, Any]:
    ring = EmbeddingQueue(8, 2)
    for step in range(3):  # each rank pushes 2 keys a step, tagged (rank, step)
        ring.push(torch.tensor([[rank, step], [rank, step]], dtype=torch.float32))
    encoder = bn_encoder()
    torch.manual_seed(10)
    everything = torch.randn(8 * world, 5, dtype=torch.float64)
    local = everything.chunk(world)[rank]
    generator = torch.Generator().manual_seed(5)
    results = {"queue": ring.queue.clone(), "pointer": int(ring.pointer)}
    # The negative control: lightly #1018's defect, keys enqueued without the gather.
    per_rank = EmbeddingQueue(8, 2)
    with mock.patch("contrastive.methods.queue.distributed.all_gather", lambda keys: keys):
        for step in range(3):
            per_rank.push(torch.tensor([[rank, step], [rank, step]], dtype=torch.float32))
    results["per_rank_queue"] = per_rank.queue.clone()
    results["eval_keys"] = key_forward(encoder.eval(), local, "ranks", 1, generator)
    results["plain_eval_keys"] = encoder(local)
    generator = torch.Generator().manual_seed(5)
    results["train_keys"] = key_forward(encoder.train(), local, "ranks", 1, generator)
    results["order"] = torch.randperm(8 * world, generator=torch.Generator().manual_seed(5))
    results["everything"] = everything
    return results


@pytest.mark.ddp
def test_two_ranks_hold_one_global_queue_and_shuffle_keys_across_ranks(tmp_path: Path) -> None:
    results = launch(_two_rank_task, 2, tmp_path)
    assert torch.equal(results[0]["queue"], results[1]["queue"])  # the same global queue
    ranks = set(results[0]["queue"][:, 0].tolist())
    assert ranks == {0.0, 1.0}  # keys from both ranks
    assert results[0]["pointer"] == results[1]["pointer"] == (3 * 4) % 8
    # the same comparison catches queues filled without the gather
    assert not torch.equal(results[0]["per_rank_queue"], results[1]["per_rank_queue"])
    for result in results:  # eval mode: the shuffle returns each key to its image
        torch.testing.assert_close(result["eval_keys"], result["plain_eval_keys"])
    # train mode: rank r's keys were normalised with the images of slice r of the order
    encoder = bn_encoder().train()
    order, everything = results[0]["order"], results[0]["everything"]
    keys = torch.empty(16, 3, dtype=torch.float64)
    for rank in range(2):
        rows = order[rank * 8 : (rank + 1) * 8]
        keys[rows] = encoder(everything[rows])
    torch.testing.assert_close(torch.cat([r["train_keys"] for r in results]), keys)
