"""Every config group option composes and instantiates; the Trainer config is complete."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from contrastive.data import ImageDataModule
from contrastive.transforms import ViewRecipe
from tests.helpers.jobs import options, run_script

# Options that need a value only a user can give.
REQUIRED: dict[str, list[str]] = {
    "data/image_folder": ["data.source.root=/nonexistent/folder", "data.num_classes=5"],
}
GROUPS = ["data", "backbone", "augment", "loss", "optim", "trainer", "logger", "callbacks"]


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids="{}".format
)
def test_every_group_option_composes_and_instantiates(
    compose_cfg: Any, group: str, option: str
) -> None:
    extra = REQUIRED.get(f"{group}/{option}", [])
    if group == "trainer" and option == "gpu":  # composes as written; built on the CPU here
        assert compose_cfg("trainer=gpu").trainer.accelerator == "gpu"
        extra = ["trainer.accelerator=cpu"]
    cfg = compose_cfg(f"{group}={option}", *extra)
    node = cfg[group]
    OmegaConf.to_container(node, resolve=True)  # every interpolation resolves
    if group == "optim":
        params = [torch.nn.Parameter(torch.zeros(2, 2))]
        optimizer = instantiate(node.optimizer)(params)
        assert isinstance(optimizer, torch.optim.Optimizer)
        scheduler = instantiate(node.scheduler)(optimizer, total_steps=10, steps_per_epoch=2)
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    elif group == "callbacks":
        built = [instantiate(c) for c in node.values()]
        assert built and all(isinstance(c, pl.Callback) for c in built)
    elif group == "trainer":
        trainer = instantiate(node, logger=False, enable_progress_bar=False)
        assert isinstance(trainer, pl.Trainer)
    elif group == "logger":
        built = instantiate(node) if "_target_" in node else None
        assert option == "none" or isinstance(built, pl.loggers.Logger)
    else:
        built = instantiate(node)
        expected = {
            "data": ImageDataModule,
            "backbone": torch.nn.Module,
            "augment": ViewRecipe,
            "loss": torch.nn.Module,
        }[group]
        assert isinstance(built, expected)
        if group == "backbone":
            recipe = instantiate(cfg.augment)
            size = recipe.image_size
            out = built(torch.zeros(2, recipe.channels, size, size))
            assert out.shape == (2, built.feature_dim)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_cfg: Any, experiment: str) -> None:
    cfg = compose_cfg(f"experiment={experiment}")
    assert cfg.experiment_name == experiment
    OmegaConf.to_container(cfg, resolve=True)


def test_published_cifar10_recipe(compose_cfg: Any) -> None:
    cfg = compose_cfg("experiment=cifar10_simclr")
    assert cfg.backbone.name == "resnet18" and cfg.backbone.small_stem is True
    assert cfg.data.batch_size == 512
    assert cfg.optim.optimizer._target_ == "contrastive.optim.LARS"
    assert cfg.loss.temperature == 0.2
    assert cfg.trainer.max_epochs == 1000
    assert cfg.augment.blur_prob == 0.0


def test_a_learnable_temperature_composes_and_starts_at_loss_temperature(compose_cfg: Any) -> None:
    cfg = compose_cfg("loss.learnable_temperature=true", "loss.temperature=0.07")
    assert cfg.loss.min_temperature == 0.01  # the signature's default
    loss = instantiate(cfg.loss)
    assert list(loss.state_dict()) == ["log_temperature"]
    torch.testing.assert_close(loss.temperature, torch.tensor(0.07))
    assert list(instantiate(compose_cfg().loss).parameters()) == []  # fixed by default


def test_trainer_config_lists_every_trainer_argument(compose_cfg: Any) -> None:
    """So that `trainer.<any arg>=...` works without Hydra's `+` (struct mode is kept):
    the trainer schema, derived from the signature, holds every argument."""
    listed = set(compose_cfg().trainer)
    arguments = set(inspect.signature(pl.Trainer.__init__).parameters)
    passed_separately = {"self", "logger", "callbacks", "plugins"}
    assert arguments - passed_separately - listed == set()
    assert listed - arguments == {"_target_"}


def test_struct_mode_rejects_unknown_keys(compose_cfg: Any) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_cfg("trainer.max_epoch=1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", r"data.batch_size"),  # a bad type: the schema's int
        ("loss.temperature=warm", r"loss.temperature"),
        ("loss.learnable_temperature=maybe", r"loss.learnable_temperature"),
        ("augment.flip_prob=[1]", r"augment.flip_prob"),
        ("backbone.widths=wide", r"backbone.widths"),
        ("data.source.verify=maybe", r"data.source.verify"),  # the source's own schema
        ("data.batchsize=64", r"batchsize"),  # an unknown key
        ("data.source.num_samples=64", r"num_samples"),  # another source's option
        ("new_key=1", r"new_key"),  # a new key needs +
        ("backbone=resnet99", r"resnet99"),  # an unknown group option
    ],
)
def test_bad_overrides_fail_at_composition_naming_the_key(
    compose_cfg: Any, override: str, message: str
) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_cfg(override)
    assert re.search(message, f"{error.value} {error.value.__cause__}")


def test_cli_bad_type_is_one_message(tmp_path: Path) -> None:
    result = run_script("pretrain.py", "data.batch_size=abc", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "data.batch_size" in result.stderr and "Integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_registered_backbone_has_a_config() -> None:
    """``backbone=<name>`` works for every name ``build_backbone`` knows (``pixels``, the
    raw-pixel baseline of the probe job, has no weights to pretrain)."""
    from contrastive.backbones import BACKBONES

    assert sorted(set(BACKBONES) - {"pixels"}) == sorted(options("backbone"))


def test_ruff_mypy_and_requires_python_name_one_python() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    floor = re.fullmatch(r">=(\d+)\.(\d+)", project["project"]["requires-python"])
    assert floor is not None
    major, minor = floor.groups()
    assert project["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert project["tool"]["mypy"]["python_version"] == f"{major}.{minor}"


def test_group_sets_a_pretraining_runs_wandb_group(compose_cfg: Any) -> None:
    """``group=<name>`` works for pretraining as for the evaluation jobs: the W&B run and
    ``backbone.pt``'s provenance get it; without it, the experiment_name."""
    from contrastive.jobs.run import Run, build_logger

    cfg = compose_cfg("group=ablation-3")
    assert Run(cfg).provenance().wandb_group == "ablation-3"
    run = build_logger(cfg).experiment  # type: ignore[union-attr]
    try:
        assert run.group == "ablation-3"
    finally:
        run.finish()
    assert Run(compose_cfg()).provenance().wandb_group == "fashion_mnist_simclr"


@pytest.mark.parametrize("option", options("data"))
def test_data_configs_hold_only_what_differs_from_the_signatures(option: str) -> None:
    """Defaults live in the constructors: ImageDataModule's and the source's, whose
    ``_target_`` is the source registered under the option's name."""
    from hydra.utils import get_class

    from contrastive.cli import CONF_DIR
    from contrastive.data.sources import SOURCES

    written = OmegaConf.load(Path(CONF_DIR) / "data" / f"{option}.yaml")
    source = get_class(written.source._target_)
    assert source is SOURCES[option]
    assert written.defaults == [
        "/schema/data@_here_",
        f"/schema/source/{option}@source",
        "_self_",
    ]
    for node, cls in ((written, ImageDataModule), (written.source, source)):
        parameters = inspect.signature(cls.__init__).parameters
        for key in set(node) - {"_target_", "defaults", "source"}:
            default = parameters[str(key)].default
            assert OmegaConf.to_container(node, resolve=False)[key] != default, (option, key)


def test_data_schemas_are_the_constructors_signatures() -> None:
    from dataclasses import MISSING, fields

    from contrastive import schema
    from contrastive.data.sources import SOURCES

    pairs = [(schema.DataSchema, ImageDataModule)]
    pairs += [(schema.SCHEMAS[f"source/{name}"], cls) for name, cls in SOURCES.items()]
    for node, cls in pairs:
        parameters = dict(inspect.signature(cls.__init__).parameters)
        parameters.pop("self")
        derived = {f.name: f for f in fields(node)}
        assert derived.pop("_target_").default.rsplit(".", 1)[-1] == cls.__name__
        assert list(derived) == list(parameters)
        for name, field in derived.items():
            default = field.default if field.default is not MISSING else field.default_factory()
            expected = parameters[name].default
            assert default == ("???" if expected is inspect.Parameter.empty else expected)


def repeated_defaults(written: dict[str, Any], nodes: dict[str, type]) -> list[str]:
    """The keys of a group YAML that repeat the default of the schema its defaults list
    names (``/schema/<name>@_here_`` or ``@<key>``)."""
    from dataclasses import MISSING, fields

    repeated = []
    for entry in written.get("defaults", []):
        if not isinstance(entry, str) or not entry.startswith("/schema/"):
            continue
        name, _, where = entry.removeprefix("/schema/").partition("@")
        node = written if where == "_here_" else written.get(where) or {}
        for spec in fields(nodes[name]):
            if spec.name in ("_target_", "defaults") or spec.name not in node:
                continue
            default = (
                spec.default_factory() if spec.default_factory is not MISSING else spec.default
            )
            if default is not MISSING and node[spec.name] == default:
                repeated.append(f"{where}.{spec.name}")
    return repeated


def test_group_yamls_hold_only_what_differs_from_their_schemas() -> None:
    """Each default lives in one place, the signature its schema is derived from."""
    from contrastive import schema
    from contrastive.cli import CONF_DIR

    nodes = {**schema.SCHEMAS, **schema._backbone_schemas(), **schema._loss_schemas()}
    nodes |= {**schema._method_schemas(), **schema._run_schemas()}
    found = {}
    for path in sorted(Path(CONF_DIR).rglob("*.yaml")):
        written = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(written, dict) and repeated_defaults(written, nodes):
            found[str(path.relative_to(CONF_DIR))] = repeated_defaults(written, nodes)
    assert found == {}
    # The check can fail: a YAML that spells out a default is caught.
    spelled_out = {"defaults": ["/schema/loss@_here_"], "block_size": "auto"}
    assert repeated_defaults(spelled_out, nodes) == ["_here_.block_size"]
