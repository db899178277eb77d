"""Typed schemas for every config node, registered in Hydra's ConfigStore.

Each group option in ``conf/`` starts its defaults list with its schema
(``- /schema/data@_here_``), so a value of the wrong type (``data.batch_size=abc``) fails
when the config is composed, with Hydra's message naming the key, before any work. Unknown
keys fail there too (the configs are in struct mode), as do new keys without ``+`` and
unknown group options. What a type cannot say (a temperature must be positive, a crop
range ordered) the constructors check, also before any work.

Every schema is derived from what it configures (:func:`signature_schema`: a constructor's
or function's signature; :func:`_schema_of`: a dataclass's fields), so each default lives
in one place, the signature, and a group YAML holds only what differs from it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import pathlib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from contrastive.data import ImageDataModule
from contrastive.data.sources import SOURCES
from contrastive.transforms.recipe import ViewRecipe

# Optional[...] rather than "X | None": OmegaConf reads these annotations at run time,
# and on Python 3.10 it does not understand the "|" form in strings.

_PRIMITIVES: tuple[type, ...] = (int, float, str, bool, bytes, pathlib.Path, enum.Enum)


def _config_type(hint: Any) -> Any:
    """The nearest type OmegaConf can hold and check: primitives, ``Optional`` and unions of
    them as they are, tuples and sequences as lists, ``Literal`` choices of strings as
    ``str``, lists and string-keyed dicts of primitives; anything else (a class, a
    callable, a ``PathLike``) ``Any``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or (isinstance(hint, type) and issubclass(hint, _PRIMITIVES)):
        return hint
    if origin is typing.Literal:
        return str if all(isinstance(arg, str) for arg in args) else Any
    if origin in (Union, types.UnionType):
        members = [_config_type(arg) for arg in args if arg is not type(None)]
        if Any in members or (len(members) > 1 and any(typing.get_origin(m) for m in members)):
            return Any  # OmegaConf holds no unions of containers (trainer.devices)
        union = members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
        return Optional[union] if type(None) in args else union  # noqa: UP045
    if origin in (tuple, list, Sequence) and args:
        item = _config_type(args[0])
        return list[item] if item is not Any else list[Any]  # type: ignore[valid-type]
    if origin is dict and len(args) == 2 and args[0] is str:
        return dict[str, _config_type(args[1])]  # type: ignore[misc]
    return Any


def _field(default: Any) -> Any:
    """A dataclass field of ``default``: lists for tuples, copies for containers, and
    ``???`` (the YAML must build it) for an object a config cannot hold (a timedelta)."""
    if default is MISSING:
        return field(default=MISSING)
    if isinstance(default, tuple | list | dict):
        copy = list if isinstance(default, tuple) else type(default)
        return field(default_factory=functools.partial(copy, default))
    if default is None or isinstance(default, _PRIMITIVES):
        return field(default=default)
    return field(default=MISSING)


def _schema_of(cls: type, target: str) -> type:
    """A structured-config twin of the dataclass ``cls`` (its fields, types and defaults,
    in the types OmegaConf can hold, see :func:`_config_type`) with a ``_target_`` of
    ``target``: one definition of the fields, in ``cls``."""
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, field(default=target))]
    for spec in dataclasses.fields(cls):
        default = MISSING if spec.default is dataclasses.MISSING else spec.default
        fields.append((spec.name, _config_type(hints[spec.name]), _field(default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Schema", fields)


def _constructors(target: Callable[..., Any]) -> list[Callable[..., Any]]:
    """``target`` itself, or a class's ``__init__`` and, while each passes ``**kwargs`` on,
    its bases' (stopping at ``object`` and at library classes)."""
    if not inspect.isclass(target):
        return [target]
    functions = []
    for cls in target.__mro__:
        if "__init__" not in vars(cls) or not cls.__module__.startswith("contrastive"):
            continue
        init = vars(cls)["__init__"]
        functions.append(init)
        kinds = [p.kind for p in inspect.signature(init).parameters.values()]
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            break
    return functions or [target.__init__]


def signature_schema(
    target: Callable[..., Any],
    path: str | None = None,
    exclude: tuple[str, ...] = (),
    partial: bool = False,
    nested: dict[str, Any] | None = None,
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> type:
    """A structured-config schema of ``target``'s keyword arguments: one field per
    parameter, typed from its hint (see :func:`_config_type`), its default the signature's
    (none: ``???``, mandatory). ``path`` is the ``_target_`` (by default the target's own
    module path); ``exclude`` drops the arguments the job passes itself (the backbone of a
    probe, ...); ``partial`` adds ``_partial_: true``; ``nested`` gives a type or schema to
    an argument (the projection head of SimCLR); ``extra`` adds ``name: (type, default)``
    fields for what a ``**kwargs`` passes on (W&B's ``group``, ``tags``, ...)."""
    parameters: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    # A class whose constructor passes ``**kwargs`` on to its base's: the base's too.
    for function in _constructors(target):
        own = inspect.signature(function).parameters
        try:
            own_hints = typing.get_type_hints(function)
        except (NameError, TypeError):  # a forward reference to a name the module lacks
            own_hints = {
                n: p.annotation for n, p in own.items() if not isinstance(p.annotation, str)
            }
        for name, parameter in own.items():
            parameters.setdefault(name, parameter)
            if name in own_hints:
                hints.setdefault(name, own_hints[name])
    path = path or f"{target.__module__}.{target.__qualname__}"
    fields: list[tuple[str, Any, Any]] = [("_target_", str, field(default=path))]
    if partial:
        fields.append(("_partial_", bool, field(default=True)))
    for name, parameter in parameters.items():
        if (
            name == "self"
            or name in exclude
            or parameter.kind
            in (
                parameter.VAR_POSITIONAL,
                parameter.VAR_KEYWORD,
            )
        ):
            continue
        hint = (nested or {}).get(name) or _config_type(hints.get(name, Any))
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        if dataclasses.is_dataclass(hint) and default is MISSING:
            spec = field(default_factory=hint)  # type: ignore[arg-type]
        else:
            spec = _field(default)
        fields.append((name, hint, spec))
    for name, (hint, default) in (extra or {}).items():
        fields.append((name, hint, field(default=default)))
    name = getattr(target, "__name__", "Node")
    return dataclasses.make_dataclass(f"{name[0].upper()}{name[1:]}Schema", fields)


AugmentSchema = _schema_of(ViewRecipe, "contrastive.transforms.ViewRecipe")
# The datamodule's generic options (``data``) and each source's own (``data.source``, one
# schema per source: ``schema/source/<name>``), from their constructors' signatures.
DataSchema = signature_schema(ImageDataModule, "contrastive.data.ImageDataModule")
SOURCE_SCHEMAS: dict[str, type] = {
    name: signature_schema(cls, f"contrastive.data.sources.{cls.__name__}")
    for name, cls in SOURCES.items()
}


@dataclass
class OptimSchema:
    optimizer: dict[str, Any] = MISSING
    scheduler: Optional[dict[str, Any]] = None  # noqa: UP045


def _backbone_schemas() -> dict[str, type]:
    """The backbones' keys from their constructors, built by ``build_backbone(name, ...)``;
    ``in_channels`` may be null for a student (it takes the teacher's)."""
    from contrastive.backbones import SmallCNN, resnet

    channels = {"in_channels": Optional[int]}  # noqa: UP045
    target = "contrastive.backbones.build_backbone"
    return {
        "small_cnn": signature_schema(
            SmallCNN, target, nested=channels, extra={"name": (str, "small_cnn")}
        ),
        "resnet": signature_schema(
            resnet, target, exclude=("arch",), nested=channels, extra={"name": (str, "resnet18")}
        ),
    }


def _loss_schemas() -> dict[str, type]:
    from contrastive.losses import InfoNCELoss

    return {"loss": signature_schema(InfoNCELoss, "contrastive.losses.InfoNCELoss")}


def _run_schemas() -> dict[str, type]:
    """The trainer, the loggers and the callbacks, from their constructors."""
    import pytorch_lightning as pl
    from pytorch_lightning import loggers

    from contrastive import callbacks

    wandb_init = {  # wandb.init's, passed through WandbLogger's **kwargs
        "group": (Optional[str], None),  # noqa: UP045
        "tags": (Any, None),
        "job_type": (Optional[str], None),  # noqa: UP045
        "settings": (Any, None),
    }
    runs = {
        "trainer": signature_schema(
            pl.Trainer, "pytorch_lightning.Trainer", exclude=("logger", "callbacks", "plugins")
        ),
        "logger/wandb": signature_schema(
            loggers.WandbLogger,
            "pytorch_lightning.loggers.WandbLogger",
            exclude=("experiment",),
            extra=wandb_init,
        ),
        "logger/csv": signature_schema(loggers.CSVLogger, "pytorch_lightning.loggers.CSVLogger"),
        "logger/tensorboard": signature_schema(
            loggers.TensorBoardLogger, "pytorch_lightning.loggers.TensorBoardLogger"
        ),
    }
    for name, cls in {
        "best_checkpoint": callbacks.BestCheckpoint,
        "last_checkpoint": callbacks.LastCheckpoint,
        "knn": callbacks.KNNMonitor,
        "online_probe": callbacks.OnlineLinearProbe,
        "throughput": callbacks.ViewThroughput,
        "health": callbacks.TrainingHealth,
        "media": callbacks.MediaLogger,
        "preemption": callbacks.Preemption,
        "rng_states": callbacks.RNGStates,
        "nonfinite": callbacks.NonFiniteGuard,
    }.items():
        runs[f"callback/{name}"] = signature_schema(cls, f"contrastive.callbacks.{cls.__name__}")
    return runs


def _method_schemas() -> dict[str, type]:
    # Imported here: the methods import Lightning, which the schema module need not.
    from contrastive.heads import ProjectionHead
    from contrastive.methods import (
        METHODS,
        LinearEvaluation,
        LogitDistillation,
        RepresentationDistillation,
    )

    head = signature_schema(
        ProjectionHead, "contrastive.heads.ProjectionHead", exclude=("input_dim",), partial=True
    )
    parts = {"projection_head": head, "predictor": head}
    return {
        **{
            f"method/{name}": signature_schema(
                cls, f"contrastive.methods.{cls.__name__}", nested=parts
            )
            for name, cls in METHODS.items()
        },
        "probe/linear": signature_schema(LinearEvaluation, "contrastive.methods.LinearEvaluation"),
        "distill/logits": signature_schema(
            LogitDistillation,
            "contrastive.methods.LogitDistillation",
            exclude=("student", "teacher", "recipe", "num_classes", "name"),
            partial=True,
        ),
        "distill/representation": signature_schema(
            RepresentationDistillation,
            "contrastive.methods.RepresentationDistillation",
            exclude=("student", "teacher", "recipe", "teacher_dim"),
            partial=True,
        ),
    }


SCHEMAS: dict[str, type] = {
    "data": DataSchema,
    "augment": AugmentSchema,
    "optim": OptimSchema,
    **{f"source/{name}": node for name, node in SOURCE_SCHEMAS.items()},
}


def register() -> None:
    """Store every schema as ``schema/<name>`` (idempotent); ``source/<name>`` ones go to
    the group ``schema/source``, and so on."""
    store = ConfigStore.instance()
    derived = {**_backbone_schemas(), **_loss_schemas(), **_method_schemas(), **_run_schemas()}
    for key, node in {**SCHEMAS, **derived}.items():
        group, _, name = f"schema/{key}".rpartition("/")
        store.store(group=group, name=name, node=node)
