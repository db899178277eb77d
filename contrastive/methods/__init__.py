"""One LightningModule per job."""

from contrastive.methods.simclr import SimCLR

__all__ = ["SimCLR"]
