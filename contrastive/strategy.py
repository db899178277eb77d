"""Lightning's DDP strategy with the two things a cluster's faults need.

- **A short process-group timeout** (``timeout_seconds``, 60 s in ``conf/trainer/ddp.yaml``
  against torch's 30 minutes): when a rank dies where nothing restarts the group (Lightning's
  own launcher, ``srun``), the survivors fail within that time instead of hanging. gloo
  usually notices a dead peer at once (the connection resets); the timeout bounds the case
  where a peer hangs or a network path goes silent. Every collective is bounded by it,
  barriers included, so rank-zero-only work that others wait for (writing a large
  checkpoint to a slow disk) must fit in it: raise it for such jobs.
- **Restart-safe rendezvous under torchrun.** After an elastic restart
  (``--max-restarts``) the workers of attempt ``n`` meet in the same TCP store as the
  attempt that failed, and the keys of process groups created later (Lightning's
  ``prepare_data`` barrier group, for one) still hold the dead workers' addresses: a
  restarted rank connects to a port nobody listens on ("Gloo connectFullMesh failed ...
  Connection refused"). Here the default group is created on a view of the store
  prefixed by ``TORCHELASTIC_RESTART_COUNT``, and every group made from it inherits that
  prefix, so each attempt has keys of its own.

After the group starts, every rank's host and process id are recorded
(:func:`contrastive.distributed.record_peers`), so a rank whose collective fails can name
the peer it lost.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import torch.distributed as dist
from lightning_fabric.utilities.seed import reset_seed
from pytorch_lightning.strategies import DDPStrategy as LightningDDPStrategy

from contrastive import distributed

log = logging.getLogger(__name__)


class DDPStrategy(LightningDDPStrategy):
    """``pytorch_lightning.strategies.DDPStrategy`` with ``timeout_seconds`` as its
    process-group timeout and a per-attempt store under torchrun (see the module).

    Args:
        timeout_seconds: how long any collective may wait for a peer before this rank
            fails (> 0).
        **kwargs: Lightning's ``DDPStrategy`` arguments (``process_group_backend``,
            ``find_unused_parameters``, ...).
    """

    def __init__(self, timeout_seconds: float = 60.0, **kwargs: Any) -> None:
        if not timeout_seconds > 0:
            raise ValueError(
                f"trainer.strategy.timeout_seconds must be > 0 (seconds a collective may "
                f"wait for a peer), got {timeout_seconds!r}"
            )
        super().__init__(timeout=timedelta(seconds=timeout_seconds), **kwargs)
        self.timeout_seconds = timeout_seconds

    def setup_distributed(self) -> None:
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is None or dist.is_initialized():
            super().setup_distributed()
        else:
            reset_seed()
            self.set_world_ranks()
            self._process_group_backend = self._get_process_group_backend()
            store, rank, world = next(
                dist.rendezvous("env://", self.global_rank, self.world_size, timeout=self._timeout)
            )
            dist.init_process_group(
                self._process_group_backend,
                store=dist.PrefixStore(f"contrastive/attempt_{attempt}", store),
                rank=rank,
                world_size=world,
                timeout=self._timeout,
                device_id=self.root_device if self.root_device.type != "cpu" else None,
            )
            log.info(
                "process group of %d ranks started (torchrun attempt %s, backend %s)",
                world,
                attempt,
                self._process_group_backend,
            )
        distributed.record_peers()
