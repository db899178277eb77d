"""Distillation of a trained teacher into a student backbone.

- :class:`LogitDistillation`: a student classifier trained on labels with
  ``alpha * kl_divergence(student, teacher, T) + (1 - alpha) * cross_entropy`` (Hinton et
  al., 2015); ``alpha=0`` is the cross-entropy-only twin.
- :class:`RepresentationDistillation`: SEED (Fang et al., 2021), no labels: the student's
  softmax over cosine similarities to a queue of teacher embeddings is matched to the
  teacher's with KL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive import distributed
from contrastive.backbones import feature_dim
from contrastive.heads import LinearHead, ProjectionHead
from contrastive.losses import cross_entropy, kl_divergence, seed_loss
from contrastive.losses.activations import check_temperature
from contrastive.transforms import ImageInputs, ViewRecipe

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
StepScheduler = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def _frozen(module: nn.Module) -> nn.Module:
    return module.eval().requires_grad_(False)


class _StudentModule(pl.LightningModule):
    """Shared plumbing: raw batches -> images (the teacher's evaluation preprocessing of
    ``recipe``; with ``augment``, random resized crops of ``crop_scale`` and flips, the
    same crop for teacher and student) -> student; the optimiser (a Hydra partial over the
    trainable parameters) with a per-step schedule (a partial called with ``total_steps``
    and ``steps_per_epoch``, or ``None``); the frozen teacher kept in eval mode (its
    BatchNorm statistics never move)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        recipe: ViewRecipe,
        optimizer: OptimizerFactory,
        scheduler: StepScheduler | None = None,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.65, 1.0),
    ) -> None:
        super().__init__()
        self.student = student
        self.images = ImageInputs(recipe, tuple(crop_scale) if augment else None)  # type: ignore[arg-type]
        self.teacher = _frozen(teacher)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def on_train_epoch_start(self) -> None:
        self.teacher.eval()  # Lightning's model.train() reaches submodules too

    @torch.no_grad()
    def teach(self, inputs: Tensor) -> Tensor:
        self.teacher.eval()
        return self.teacher(inputs).float()

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, int(self.trainer.max_epochs or 1)))
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total, steps_per_epoch=steps_per_epoch
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class LogitDistillation(_StudentModule):
    """A student classifier (backbone + linear layer) trained against a frozen teacher.

    ``teacher`` maps backbone inputs to class logits. Loss per batch, on the same
    (augmented) images for both networks::

        alpha * kl_divergence(student_logits, teacher_logits, temperature)
            + (1 - alpha) * cross_entropy(student_logits, labels)

    With ``alpha=0`` the teacher is not run in training (the CE-only baseline); it still
    runs at test time, so agreement and KL are measured for both.

    Test outputs (``test_outputs``): ``(student_logits, teacher_logits, labels)`` per batch.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        recipe: ViewRecipe,
        num_classes: int,
        optimizer: OptimizerFactory,
        scheduler: StepScheduler | None = None,
        alpha: float = 0.9,
        temperature: float = 4.0,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.65, 1.0),
        name: str = "student",
    ) -> None:
        super().__init__(student, teacher, recipe, optimizer, scheduler, augment, crop_scale)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill.alpha={alpha} must be in [0, 1]")
        self.head = LinearHead(feature_dim(student), num_classes)
        self.alpha = alpha
        self.temperature = check_temperature(temperature, "distill.temperature")
        self.name = name
        self.test_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, raw: Tensor) -> Tensor:
        return self.head(self.student(self.images(raw)))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        raw, labels = batch
        inputs = self.images(raw)  # augmented once, seen by both networks
        logits = self.head(self.student(inputs))
        ce = cross_entropy(logits, labels)
        loss = (1 - self.alpha) * ce
        logs = {f"distill/{self.name}/train_ce": ce}
        if self.alpha > 0:
            kl = kl_divergence(logits, self.teach(inputs), self.temperature)
            loss = loss + self.alpha * kl
            logs[f"distill/{self.name}/train_kl"] = kl
        logs[f"distill/{self.name}/train_loss"] = loss
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False)
        return loss

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        raw, labels = batch
        inputs = self.images(raw)
        student = self.head(self.student(inputs)).float()
        self.test_outputs.append((student.cpu(), self.teach(inputs).cpu(), labels.cpu()))


def distillation_metrics(
    student: Tensor, teacher: Tensor, labels: Tensor, prefix: str
) -> dict[str, float]:
    """Test metrics of student logits against the teacher's and the labels.

    ``{prefix}top1``, ``{prefix}nll``, ``{prefix}agreement`` (fraction of test images where
    student and teacher predict the same class) and ``{prefix}test_kl``
    (``KL(softmax(teacher) || softmax(student))`` at temperature 1, batch mean).
    """
    predictions = student.argmax(dim=1)
    return {
        f"{prefix}top1": float((predictions == labels).float().mean()),
        f"{prefix}nll": float(F.cross_entropy(student, labels)),
        f"{prefix}agreement": float((predictions == teacher.argmax(dim=1)).float().mean()),
        f"{prefix}test_kl": float(kl_divergence(student, teacher, 1.0)),
    }


class RepresentationDistillation(_StudentModule):
    """SEED: self-supervised distillation of a frozen teacher encoder into a student.

    The student backbone gets a projection MLP to the teacher's feature width. Each step,
    :func:`~contrastive.losses.seed_loss` matches the student's softmax over cosine
    similarities to the anchors (a FIFO queue of the teacher's past embeddings plus each
    sample's own teacher embedding) to the teacher's; then the batch's teacher embeddings
    (from every process) replace the oldest queue entries. The queue starts as random unit
    vectors, as in SEED. No labels are used.
    """

    queue: Tensor
    queue_ptr: Tensor

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        recipe: ViewRecipe,
        teacher_dim: int,
        optimizer: OptimizerFactory,
        scheduler: StepScheduler | None = None,
        queue_size: int = 4096,
        student_temperature: float = 0.07,
        teacher_temperature: float = 0.01,
        hidden_dim: int = 512,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.65, 1.0),
    ) -> None:
        super().__init__(student, teacher, recipe, optimizer, scheduler, augment, crop_scale)
        check_temperature(student_temperature, "distill.student_temperature")
        check_temperature(teacher_temperature, "distill.teacher_temperature")
        if queue_size < 1:
            raise ValueError(f"seed queue_size must be >= 1, got {queue_size}")
        self.projection = ProjectionHead(feature_dim(student), hidden_dim, teacher_dim)
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, teacher_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor) -> None:
        """Overwrite the oldest queue rows with ``embeddings`` (normalised), wrapping round."""
        embeddings = F.normalize(embeddings.float(), dim=1)[: self.queue.shape[0]]
        size, start = embeddings.shape[0], int(self.queue_ptr)
        rows = (start + torch.arange(size, device=self.queue.device)) % self.queue.shape[0]
        self.queue[rows] = embeddings
        self.queue_ptr.fill_((start + size) % self.queue.shape[0])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        raw, _ = batch
        inputs = self.images(raw)
        teacher = self.teach(inputs)
        student = self.projection(self.student(inputs))
        loss = seed_loss(
            student, teacher, self.queue, self.student_temperature, self.teacher_temperature
        )
        self.enqueue(distributed.all_gather(teacher))
        self.log("distill/seed/train_loss", loss, on_step=True, on_epoch=False)
        return loss
