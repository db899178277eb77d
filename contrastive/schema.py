"""Typed schemas for the main config groups, registered in Hydra's ConfigStore.

Each group option in ``conf/`` starts its defaults list with its group's schema
(``- /schema/data@_here_``), so a value of the wrong type (``data.batch_size=abc``) fails
when the config is composed, with Hydra's message naming the key, before any work. Unknown
keys fail there too (the configs are in struct mode), as do new keys without ``+`` and
unknown group options. What a type cannot say (a temperature must be positive, a crop
range ordered) the constructors check, also before any work.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from contrastive.transforms.recipe import ViewRecipe

# Optional[...] rather than "X | None": OmegaConf reads these annotations at run time,
# and on Python 3.10 it does not understand the "|" form in strings.


@dataclass
class DataSchema:
    _target_: str = "contrastive.data.ImageDataModule"
    dataset: str = MISSING
    root: Optional[str] = "data"  # noqa: UP045
    download: bool = False
    batch_size: int = 256
    eval_batch_size: int = 1024
    num_workers: int = 0
    bank_size: Optional[int] = None  # noqa: UP045
    image_size: int = 32
    channels: int = 3
    num_samples: int = 2048
    num_classes: Optional[int] = 10  # noqa: UP045
    labelled: bool = True
    on_bad_image: str = "error"
    seed: int = 0
    verify: bool = True


@dataclass
class LossSchema:
    _target_: str = "contrastive.losses.InfoNCELoss"
    temperature: float = 0.2
    gather_distributed: bool = True
    block_size: Optional[Union[int, str]] = "auto"  # noqa: UP007, UP045


def _schema_of(cls: type, target: str) -> type:
    """A structured-config twin of the dataclass ``cls`` (its fields, types and defaults,
    tuples as lists and ``Literal`` choices as ``str``, which OmegaConf can hold) with a
    ``_target_`` of ``target``: one definition of the fields, in ``cls``."""
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, field(default=target))]
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        origin = typing.get_origin(hint)
        if origin is tuple:
            hint = list[typing.get_args(hint)[0]]  # type: ignore[misc]
        elif origin is typing.Literal:
            hint = str
        if spec.default is dataclasses.MISSING:
            default = field(default=MISSING)
        elif isinstance(spec.default, tuple):
            default = field(default_factory=functools.partial(list, spec.default))
        else:
            default = field(default=spec.default)
        fields.append((spec.name, hint, default))
    return dataclasses.make_dataclass(f"{cls.__name__}Schema", fields)


AugmentSchema = _schema_of(ViewRecipe, "contrastive.transforms.ViewRecipe")


@dataclass
class SmallCNNSchema:
    _target_: str = "contrastive.backbones.build_backbone"
    name: str = "small_cnn"
    in_channels: int = 3
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    convs_per_stage: int = 1
    pool_size: int = 4


@dataclass
class ResNetSchema:
    _target_: str = "contrastive.backbones.build_backbone"
    name: str = "resnet18"
    in_channels: int = 3
    small_stem: bool = True


@dataclass
class OptimSchema:
    lr_scaling: str = "none"
    optimizer: dict[str, Any] = MISSING
    scheduler: Optional[dict[str, Any]] = None  # noqa: UP045


SCHEMAS: dict[str, type] = {
    "data": DataSchema,
    "loss": LossSchema,
    "augment": AugmentSchema,
    "small_cnn": SmallCNNSchema,
    "resnet": ResNetSchema,
    "optim": OptimSchema,
}


def register() -> None:
    """Store every schema as ``schema/<name>`` (idempotent)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)
