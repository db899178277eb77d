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
import enum
import functools
import inspect
import pathlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from contrastive.data import ImageDataModule
from contrastive.data.sources import SOURCES
from contrastive.transforms.recipe import ViewRecipe

# Optional[...] rather than "X | None": OmegaConf reads these annotations at run time,
# and on Python 3.10 it does not understand the "|" form in strings.


@dataclass
class LossSchema:
    _target_: str = "contrastive.losses.InfoNCELoss"
    temperature: float = 0.2
    gather_distributed: bool = True
    block_size: Optional[Union[int, str]] = "auto"  # noqa: UP007, UP045


_PRIMITIVES: tuple[type, ...] = (int, float, str, bool, bytes, pathlib.Path, enum.Enum)


def _config_type(hint: Any) -> Any:
    """The nearest type OmegaConf can hold and check: primitives, ``Optional`` and unions of
    them as they are, tuples as lists, ``Literal`` choices of strings as ``str``, lists and
    string-keyed dicts of primitives; anything else (a class, a ``PathLike``) ``Any``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or (isinstance(hint, type) and issubclass(hint, _PRIMITIVES)):
        return hint
    if origin is typing.Literal:
        return str if all(isinstance(arg, str) for arg in args) else Any
    if origin in (Union, types.UnionType):
        members = [_config_type(arg) for arg in args if arg is not type(None)]
        if Any in members:
            return Any
        union = members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
        return Optional[union] if type(None) in args else union  # noqa: UP045
    if origin in (tuple, list) and args:
        item = _config_type(args[0])
        return list[item] if item is not Any else list[Any]  # type: ignore[valid-type]
    if origin is dict and len(args) == 2 and args[0] is str:
        return dict[str, _config_type(args[1])]  # type: ignore[misc]
    return Any


def _field(default: Any) -> Any:
    if default is MISSING:
        return field(default=MISSING)
    if isinstance(default, tuple | list | dict):
        copy = list if isinstance(default, tuple) else type(default)
        return field(default_factory=functools.partial(copy, default))
    return field(default=default)


def _make_schema(name: str, target: str, params: list[tuple[str, Any, Any]]) -> type:
    fields = [("_target_", str, field(default=target))]
    fields += [(key, _config_type(hint), _field(default)) for key, hint, default in params]
    return dataclasses.make_dataclass(name, fields)


def _schema_of(cls: type, target: str) -> type:
    """A structured-config twin of the dataclass ``cls`` (its fields, types and defaults,
    in the types OmegaConf can hold, see :func:`_config_type`) with a ``_target_`` of
    ``target``: one definition of the fields, in ``cls``."""
    hints = typing.get_type_hints(cls)
    params = [
        (
            spec.name,
            hints[spec.name],
            MISSING if spec.default is dataclasses.MISSING else spec.default,
        )
        for spec in dataclasses.fields(cls)
    ]
    return _make_schema(f"{cls.__name__}Schema", target, params)


def schema_of_init(cls: type, target: str | None = None) -> type:
    """A structured-config twin of ``cls.__init__``'s keyword arguments: one field per
    parameter, typed from its hint (see :func:`_config_type`; a parameter that takes an
    object, a nested node with its own ``_target_``, is ``Any``), its default the
    signature's (none: ``???``, mandatory), and ``_target_`` filled in (by default the
    class's own module path). The signature stays the one definition of the options."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    params = []
    for name, param in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = MISSING if param.default is inspect.Parameter.empty else param.default
        params.append((name, hints.get(name, Any), default))
    target = target or f"{cls.__module__}.{cls.__qualname__}"
    return _make_schema(f"{cls.__name__}Schema", target, params)


AugmentSchema = _schema_of(ViewRecipe, "contrastive.transforms.ViewRecipe")
# The datamodule's generic options (``data``) and each source's own (``data.source``, one
# schema per source: ``schema/source/<name>``), from their constructors' signatures.
DataSchema = schema_of_init(ImageDataModule, "contrastive.data.ImageDataModule")
SOURCE_SCHEMAS: dict[str, type] = {
    name: schema_of_init(cls, f"contrastive.data.sources.{cls.__name__}")
    for name, cls in SOURCES.items()
}


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
    **{f"source/{name}": node for name, node in SOURCE_SCHEMAS.items()},
}


def register() -> None:
    """Store every schema as ``schema/<name>`` (idempotent); ``source/<name>`` ones go to
    the group ``schema/source``."""
    store = ConfigStore.instance()
    for key, node in SCHEMAS.items():
        group, _, name = f"schema/{key}".rpartition("/")
        store.store(group=group, name=name, node=node)
