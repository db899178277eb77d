"""Write and load a pretrained backbone (``backbone.pt``; also read from a run directory or a
Lightning ``.ckpt``) and the probe job's linear head (``probe_head.pt``).

Everything is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, so a file from a stranger cannot run code; a file that needs more is refused unless
the caller passes ``trust=True`` (the jobs' ``trust_checkpoint=true``). Every failure is a
:class:`CheckpointError` that names the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastive.atomic import atomic_save
from contrastive.backbones import build_backbone, feature_dim
from contrastive.errors import ConfigError
from contrastive.heads import LinearHead
from contrastive.transforms.recipe import ViewRecipe

log = logging.getLogger(__name__)

# The marker save_backbone writes and load_pretrained looks for.
BACKBONE_FORMAT = "contrastive.backbone/1"

# The marker of the linear head the probe job writes beside its backbone.pt.
PROBE_HEAD_FORMAT = "contrastive.probe_head/1"
PROBE_HEAD_FILE = "probe_head.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True)
class Provenance:
    """Where a set of weights came from: the W&B group of the pretraining run, its composed
    config and the git commit it ran at (each ``None`` when unknown)."""

    wandb_group: str | None = None
    config: dict[str, Any] | None = None
    git_commit: str | None = None

    @classmethod
    def of(cls, info: dict[str, Any]) -> Provenance:
        return cls(info.get("wandb_group"), info.get("config"), info.get("git_commit"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "wandb_group": self.wandb_group,
            "config": self.config,
            "git_commit": self.git_commit,
        }


@dataclass(frozen=True)
class ProbeHead:
    """A trained linear head, as :func:`load_teacher` reads it from ``probe_head.pt``."""

    module: LinearHead
    objective: str
    num_outputs: int
    path: str
    classes: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pretrained:
    """A pretrained backbone and what its file says about it.

    ``recipe`` is the view recipe it was trained with (its evaluation preprocessing),
    ``spec`` rebuilds it (:func:`~contrastive.backbones.build_backbone`), ``path`` is the
    file it came from, ``metrics`` the metrics saved with it, ``head`` the linear head of a
    linear-probe run directory (a distillation teacher), and ``extra`` whatever else the
    file records (``source``, ``finetuned``, ...).
    """

    backbone: nn.Module
    recipe: ViewRecipe | None
    spec: dict[str, Any]
    path: str
    provenance: Provenance = field(default_factory=Provenance)
    dataset: str | None = None
    num_classes: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    head: ProbeHead | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def preprocessing(self) -> ViewRecipe:
        """The recipe, whose evaluation path (:func:`~contrastive.transforms.eval_images`)
        turns images into this backbone's inputs; a file without one cannot be evaluated."""
        if self.recipe is None:
            raise CheckpointError(
                f"{self.path} records no view recipe, so its input preprocessing is unknown; "
                "pass a backbone.pt or last.ckpt written by the pretraining job"
            )
        return self.recipe

    @property
    def teacher_metrics(self) -> dict[str, Any]:
        """The metrics of the probe head when there is one, else the backbone's."""
        return self.head.metrics if self.head is not None else self.metrics


def read_checkpoint(path: Path, trust: bool = False, check: bool = True) -> Any:
    """The contents of a torch file, or a :class:`CheckpointError` naming it: truncated or
    corrupt (:func:`checkpoint_problem`; ``check=False`` when the caller has run it), or a
    pickle that needs code to load while ``trust`` is false. Tensors are memory-mapped,
    not read, until used."""
    problem = checkpoint_problem(path) if check else None
    if problem is not None:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({problem}); expected a backbone.pt or a "
            "Lightning last.ckpt written by contrastive's pretraining job"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
    except pickle.UnpicklingError as error:  # a pickle that would run code to load
        raise CheckpointError(
            f"{path} needs arbitrary code to load ({str(error).splitlines()[0][:200]}), so it "
            "was refused: a checkpoint is a pickle, and loading one from a stranger can run "
            "anything. If you trust where it came from, pass trust_checkpoint=true"
        ) from None
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); expected a backbone.pt or a Lightning "
            "last.ckpt written by contrastive's pretraining job"
        ) from None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole torch file (truncated, garbage, a bad CRC in any
    record), or ``None`` when it is. Reads every byte; unpickles nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
                return "not a torch checkpoint (no data.pkl record)"
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return f"unreadable ({type(error).__name__}: {str(error)[:120]})"
    return f"corrupt record {bad}" if bad is not None else None


def resolve(path: str | Path) -> Path:
    """A run directory resolves to its ``backbone.pt`` (else ``checkpoints/last.ckpt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "backbone.pt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path} holds neither backbone.pt nor checkpoints/last.ckpt; "
            "pass a pretraining run directory or one of those files"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or run directory")
    return path


def save_backbone(backbone: nn.Module, path: str, **extra: Any) -> None:
    """Write the weights plus the spec needed to rebuild them (``torch.load``-safe).

    :func:`load_pretrained` rebuilds and loads the file."""
    spec = getattr(backbone, "backbone_spec", None)
    if spec is None:
        raise ValueError("backbone was not built by build_backbone; it has no backbone_spec")
    payload = {
        "format": BACKBONE_FORMAT,
        "spec": spec,
        "feature_dim": feature_dim(backbone),
        "state_dict": backbone.state_dict(),
        **extra,
    }
    atomic_save(payload, path)


# The entries of a backbone file that Pretrained holds in fields of their own.
_RECORDED = frozenset(
    ("format", "spec", "recipe", "wandb_group", "config", "git_commit")
) | frozenset(("dataset", "num_classes", "metrics"))


def load_pretrained(path: str | Path, trust: bool = False) -> Pretrained:
    """Rebuild the pretrained backbone described by ``path`` (a run directory,
    ``backbone.pt`` or a Lightning ``.ckpt``) and load its weights; the backbone is in
    eval mode."""
    file = resolve(path)
    payload = read_checkpoint(file, trust)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{file} holds a {type(payload).__name__}, not a checkpoint dict")
    if payload.get("format") == BACKBONE_FORMAT:
        info = {k: v for k, v in payload.items() if k != "state_dict"}
        state = payload["state_dict"]
    elif "state_dict" in payload and "contrastive" in payload:  # Lightning checkpoint
        info = dict(payload["contrastive"])
        state = {
            k.removeprefix("backbone."): v
            for k, v in payload["state_dict"].items()
            if k.startswith("backbone.")
        }
    else:
        raise CheckpointError(
            f"{file} is a torch file but not one of contrastive's checkpoints (no "
            f"'{BACKBONE_FORMAT}' marker and no 'contrastive' section)"
        )
    spec = info.get("spec")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{file} does not say which backbone it holds (no 'spec')")
    try:
        backbone = build_backbone(spec["name"], **spec.get("kwargs", {}))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{file}: cannot rebuild backbone {spec}: {error}") from None
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{file}: its weights do not fit the backbone it names ({spec['name']}, "
            f"{spec.get('kwargs', {})}): missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {shapes[:5]} — is it from another backbone?"
        )
    backbone.load_state_dict(state)
    try:
        recipe = ViewRecipe(**info["recipe"]) if info.get("recipe") else None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{file}: its view recipe is unusable ({error})") from None
    return Pretrained(
        backbone=backbone.eval(),
        recipe=recipe,
        spec=spec,
        path=str(file),
        provenance=Provenance.of(info),
        dataset=info.get("dataset"),
        num_classes=info.get("num_classes"),
        metrics=dict(info.get("metrics") or {}),
        extra={k: v for k, v in info.items() if k not in _RECORDED},
    )


def save_probe_head(head: LinearHead, path: str | Path, **extra: Any) -> None:
    """Write a trained linear head (``torch.load``-safe) for :func:`load_teacher`."""
    payload = {
        "format": PROBE_HEAD_FORMAT,
        "input_dim": head.linear.in_features,
        "num_outputs": head.linear.out_features,
        "batch_norm": not isinstance(head.norm, nn.Identity),
        "state_dict": head.state_dict(),
        **extra,
    }
    atomic_save(payload, path)


def load_teacher(path: str | Path, trust: bool = False) -> Pretrained:
    """The backbone and linear head (``head``) of a linear-probe run directory, a
    distillation teacher; both modules in eval mode."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(
            f"teacher={path} is not a directory; pass a linear-probe run directory (it holds "
            f"backbone.pt and {PROBE_HEAD_FILE}, written by scripts/linear_probe.py)"
        )
    head_file = directory / PROBE_HEAD_FILE
    if not head_file.is_file():
        hint = (
            " (this looks like a pretraining run: run scripts/linear_probe.py "
            f"pretrained={directory} first and pass its run directory)"
            if (directory / "backbone.pt").is_file()
            else ""
        )
        raise CheckpointError(
            f"{head_file} is missing: teacher= must be a linear-probe run directory holding "
            f"backbone.pt and {PROBE_HEAD_FILE}{hint}"
        )
    pretrained = load_pretrained(directory / "backbone.pt", trust)
    backbone = pretrained.backbone
    payload = read_checkpoint(head_file, trust)
    if not isinstance(payload, dict) or payload.get("format") != PROBE_HEAD_FORMAT:
        raise CheckpointError(
            f"{head_file} is not a probe head written by scripts/linear_probe.py (no "
            f"'{PROBE_HEAD_FORMAT}' marker)"
        )
    if payload["input_dim"] != feature_dim(backbone):
        raise CheckpointError(
            f"{head_file} takes {payload['input_dim']}-d features but {pretrained.path} "
            f"outputs {feature_dim(backbone)}-d ones: the head and backbone are from "
            "different runs"
        )
    head = LinearHead(payload["input_dim"], payload["num_outputs"], payload["batch_norm"])
    try:
        head.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{head_file}: the head's weights do not load: {error}") from None
    record = ProbeHead(
        module=head.eval(),
        objective=str(payload.get("objective", "softmax")),
        num_outputs=int(payload["num_outputs"]),
        path=str(head_file),
        classes=tuple(payload.get("classes") or ()),
        metrics=dict(payload.get("metrics") or {}),
    )
    return dataclasses.replace(pretrained, head=record)


def resume_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint a pretraining run continues from.

    ``resume="auto"`` takes the newest whole checkpoint in ``output_dir``
    (``checkpoints/last.ckpt``, Lightning's SLURM ``hpc_ckpt_*.ckpt``, then the best
    ``checkpoints/epoch*.ckpt``; a requeued SLURM or submitit job reruns in the same
    directory), skipping truncated or corrupt ones with a warning; a path takes that file;
    ``None`` starts fresh. A directory that holds checkpoints but no whole one is an
    error, never a silent fresh start.
    """
    if resume is None:
        return None
    if resume == "auto":
        found = [
            output_dir / "checkpoints" / "last.ckpt",
            *output_dir.glob("hpc_ckpt_*.ckpt"),
            *(output_dir / "checkpoints").glob("epoch*.ckpt"),
        ]
        existing = sorted((p for p in found if p.is_file()), key=lambda p: -p.stat().st_mtime)
        problems: dict[str, str] = {}
        for candidate in existing:
            problem = checkpoint_problem(candidate)
            if problem is None:
                log.info("resuming from %s", candidate)
                return candidate
            log.warning("skipping checkpoint %s: %s", candidate, problem)
            problems[candidate.name] = problem
        if problems:
            raise ConfigError(
                f"resume=auto: no usable checkpoint in {output_dir}: "
                + "; ".join(f"{name}: {problem}" for name, problem in problems.items())
                + ". Pass resume=<a good .ckpt>, or resume=null to start afresh."
            )
        return None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"resume={resume!r}: no such checkpoint file (or use resume=auto)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ConfigError(f"resume={resume!r}: {problem}; pass a whole .ckpt or resume=auto")
    return path
