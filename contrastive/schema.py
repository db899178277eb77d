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
import inspect
import types
import typing
from collections.abc import Callable, Sequence
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

_PLAIN = (int, float, bool, str)


def _config_type(hint: Any) -> Any:
    """``hint`` as a type OmegaConf can hold: plain values, ``Optional`` of them, lists of
    them (tuples become lists), ``Literal`` choices as ``str``; anything else (modules,
    callables, unions of several types) is ``Any``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _PLAIN:
        return hint
    if origin is typing.Literal:
        return str
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = _config_type(rest[0])
            return Any if inner is Any else Optional[inner]  # noqa: UP045
        return Any
    if origin in (list, tuple, Sequence) and args and _config_type(args[0]) in _PLAIN:
        return list[_config_type(args[0])]  # type: ignore[misc]
    return Any


def signature_schema(
    target: Callable[..., Any],
    path: str,
    exclude: tuple[str, ...] = (),
    partial: bool = False,
    nested: dict[str, Any] | None = None,
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> type:
    """A structured-config schema of ``target``'s keyword arguments: their types (see
    :func:`_config_type`) and defaults, read from its signature, so a group YAML holds only
    what differs. ``path`` is the ``_target_``; ``exclude`` drops the arguments the job
    passes itself (the backbone of a probe, ...); ``partial`` adds ``_partial_: true``;
    ``nested`` gives a schema to a node-valued argument (the projection head of SimCLR);
    ``extra`` adds ``name: (type, default)`` fields for what a ``**kwargs`` passes on (W&B's
    ``group``, ``tags``, ...)."""
    function = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(function).parameters
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):  # a forward reference to a name the module lacks
        hints = {
            n: p.annotation for n, p in parameters.items() if not isinstance(p.annotation, str)
        }
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
        default = parameter.default
        if default is inspect.Parameter.empty:
            spec = field(default=MISSING)
        elif isinstance(default, tuple | list):
            spec = field(default_factory=functools.partial(list, default))
        elif dataclasses.is_dataclass(hint):
            spec = field(default_factory=hint)  # type: ignore[arg-type]
        elif default is None or isinstance(default, _PLAIN):
            spec = field(default=default)
        else:  # an object a config cannot hold (a timedelta, ...): the YAML must build it
            spec = field(default=MISSING)
        fields.append((name, hint, spec))
    for name, (hint, default) in (extra or {}).items():
        fields.append((name, hint, field(default=default)))
    name = getattr(target, "__name__", "Node")
    return dataclasses.make_dataclass(f"{name[0].upper()}{name[1:]}Schema", fields)


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


@dataclass
class OptimSchema:
    optimizer: dict[str, Any] = MISSING
    scheduler: Optional[dict[str, Any]] = None  # noqa: UP045


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
        LinearEvaluation,
        LogitDistillation,
        RepresentationDistillation,
        SimCLR,
    )

    head = signature_schema(
        ProjectionHead, "contrastive.heads.ProjectionHead", exclude=("input_dim",), partial=True
    )
    return {
        "method/simclr": signature_schema(
            SimCLR, "contrastive.methods.SimCLR", nested={"projection_head": head}
        ),
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
}


def register() -> None:
    """Store every schema as ``schema/<name>`` (idempotent)."""
    store = ConfigStore.instance()
    derived = {**_backbone_schemas(), **_loss_schemas(), **_method_schemas(), **_run_schemas()}
    for name, node in {**SCHEMAS, **derived}.items():
        group, _, option = f"schema/{name}".rpartition("/")
        store.store(group=group, name=option, node=node)
