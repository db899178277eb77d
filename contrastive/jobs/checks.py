"""Pre-flight checks: refuse, before any work, a set-up that cannot run, with a message
that names the setting to change. Each takes built objects, not a config."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastive.backbones import in_channels
from contrastive.checkpoints import Pretrained
from contrastive.errors import ConfigError
from contrastive.transforms import ViewRecipe


def check_channels(
    data_channels: int, backbone: nn.Module, recipe: ViewRecipe, dataset: str
) -> None:
    """The backbone and the recipe take the data's images."""
    wanted = in_channels(backbone)
    if recipe.channels != wanted:
        raise ConfigError(
            f"augment.channels={recipe.channels} but backbone.in_channels={wanted}; "
            "they must match (leave backbone.in_channels at ${augment.channels})"
        )
    if data_channels == 3 and wanted == 1:
        raise ConfigError(
            f"data '{dataset}' has 3-channel (RGB) images but the backbone takes "
            "1-channel (grayscale) images. Use an RGB recipe, e.g. augment=cifar "
            "(backbone.in_channels follows augment.channels)."
        )


def check_image_size(backbone: nn.Module, recipe: ViewRecipe) -> None:
    """Views are large enough for the backbone: one dummy forward pass per view size
    (global, and local with multi-crop), watching every strided convolution and pooling for
    an input smaller than its stride (the feature map has already run out)."""
    check_view_size(backbone, int(recipe.image_size), int(recipe.channels), "augment.image_size")
    if recipe.local_views:
        check_view_size(
            backbone, int(recipe.local_size), int(recipe.channels), "augment.local_size"
        )


def check_view_size(backbone: nn.Module, size: int, channels: int, key: str) -> None:
    """Views of ``size`` pixels go through ``backbone`` (``key``: the setting to name)."""
    problems: list[str] = []

    def watch(name: str, stride: int) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            height, width = inputs[0].shape[-2:]
            if min(height, width) < stride and not problems:
                problems.append(f"its {name} (stride {stride}) would get a {height}x{width} map")

        return hook

    handles = []
    for name, module in backbone.named_modules():
        stride = getattr(module, "stride", 1)
        stride = max(stride) if isinstance(stride, tuple | list) else int(stride or 1)
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d) and stride > 1:
            handles.append(module.register_forward_pre_hook(watch(name, stride)))
    was_training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, channels, size, size))
    except RuntimeError as error:
        problems.append(str(error).splitlines()[0][:160])
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    if problems:
        spec = getattr(backbone, "backbone_spec", {}) or {}
        raise ConfigError(
            f"{key}={size} is too small for backbone {spec.get('name', '?')}: "
            f"{problems[0]}. Use larger views ({key}) or a backbone that "
            "downsamples less (backbone.small_stem=true for ResNets, fewer backbone.widths "
            "for small_cnn)"
        )


def check_classes(datamodule: Any) -> None:
    """``data.num_classes`` matches the class folders (filled in from them when null)."""
    if not datamodule.labelled:
        return
    classes = datamodule.classes
    if datamodule.num_classes is None and classes:
        datamodule.num_classes = len(classes)
    elif classes and len(classes) != datamodule.num_classes:
        raise ConfigError(
            f"data.num_classes={datamodule.num_classes} but '{datamodule.dataset}' has "
            f"{len(classes)} classes; set data.num_classes={len(classes)} (or null)"
        )


def check_labels(method: Any, datamodule: Any) -> None:
    """A method that trains on class labels (SupCon) gets a labelled dataset."""
    if getattr(method, "requires_labels", False) and not datamodule.labelled:
        raise ConfigError(
            f"method={type(method).__name__.lower()} trains on class labels, but data "
            f"'{datamodule.dataset}' has none; use a labelled dataset or another method "
            "(e.g. method=simclr)"
        )


def check_optim(optimizer: Any, scheduler: Any) -> None:
    """Build the optimiser and schedule once on a dummy parameter, so a bad value (a
    negative lr, warmup, ...) stops the job before any work."""
    try:
        dummy = optimizer([torch.nn.Parameter(torch.zeros(1))])
        if scheduler is not None:
            scheduler(dummy, total_steps=10, steps_per_epoch=2)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optim: {error}") from None


def check_batches(datamodule: Any, world_size: int) -> None:
    """At least one full training batch per process (the last partial one is dropped), and
    at least two images in a global batch (InfoNCE needs a negative)."""
    if datamodule.batch_size * world_size < 2:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} x {world_size} process(es) is a "
            "global batch of one image: InfoNCE needs at least 2 (each image's negatives are "
            "the other images); raise data.batch_size"
        )
    size = len(datamodule.train_dataloader().dataset)
    needed = datamodule.batch_size * world_size
    if size < needed:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} x {world_size} process(es) "
            f"needs at least {needed} training images, but '{datamodule.dataset}' has "
            f"{size}; lower data.batch_size"
        )


def check_data(datamodule: Any, pretrained: Pretrained) -> None:
    """An evaluation's data fits the backbone it loads: its channels, and labels below
    ``data.num_classes``."""
    channels = datamodule.sample_shape()[0]
    if channels == 3 and in_channels(pretrained.backbone) == 1:
        raise ConfigError(
            f"{pretrained.path} holds a 1-channel (grayscale) backbone but data "
            f"'{datamodule.dataset}' has 3-channel images"
        )
    largest = int(datamodule.labels().max())
    if largest >= datamodule.num_classes:
        raise ConfigError(
            f"data.num_classes={datamodule.num_classes} but the labels of "
            f"'{datamodule.dataset}' go up to {largest}; set data.num_classes={largest + 1}"
        )


def check_head(pretrained: Pretrained, datamodule: Any) -> None:
    """A distillation teacher's head is a softmax classifier over the data's classes."""
    head = pretrained.head
    if head is None:
        raise ConfigError(f"{pretrained.path} has no probe head to distil logits from")
    if head.objective != "softmax":
        raise ConfigError(
            f"{head.path} is a '{head.objective}' head; logit distillation needs a "
            "softmax (cross-entropy) probe: rerun the probe with probe.objective=softmax"
        )
    if head.num_outputs != int(datamodule.num_classes):
        raise ConfigError(
            f"{head.path} predicts {head.num_outputs} classes but "
            f"data.num_classes={datamodule.num_classes} ('{datamodule.dataset}'); distil on "
            "the data the teacher's probe was trained on"
        )
