"""The pretraining job end to end (in-process and through the CLI), on CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

from contrastive.checkpoints import load_pretrained
from contrastive.jobs.pretrain import build, pretrain
from tests.helpers.formats import cifar10_root
from tests.helpers.jobs import ROOT
from tests.helpers.markers import needs_fashion_mnist
from tests.helpers.wandb_reader import wait_for_run

FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@needs_fashion_mnist
def test_default_experiment_writes_every_output(compose_cfg: Any, tmp_path: Path) -> None:
    cfg = compose_cfg(*FAST, "data.batch_size=64", "data.eval_batch_size=500")
    metrics = pretrain(cfg)

    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    # The default validates every 3 epochs; a 1-epoch run still ends with a validation,
    # and keeps the training metrics beside the validation ones.
    assert {"train/loss", "val/knn_top1", "val/online_top1"} <= set(written)
    assert 0.0 <= written["val/knn_top1"] <= 1.0 and "val/online_top1" in written
    # limit_val_batches=2 with eval batches of 500 -> 1000 test images scored.
    assert written["val/knn_num_test_samples"] == 1000

    pretrained = load_pretrained(tmp_path / "backbone.pt")
    backbone = pretrained.backbone
    assert pretrained.spec["name"] == "small_cnn" and pretrained.dataset == "fashion_mnist"
    images = torch.randn(2, 1, 28, 28)
    model_backbone = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = {
        k.removeprefix("backbone."): v
        for k, v in model_backbone["state_dict"].items()
        if k.startswith("backbone.")
    }
    reference = load_pretrained(tmp_path / "backbone.pt").backbone
    reference.load_state_dict(state)
    backbone.eval(), reference.eval()
    assert torch.equal(backbone(images), reference(images))

    run = wait_for_run(tmp_path / "wandb")
    steps = [step for step, _ in run.metric("train/loss")]
    assert len(steps) >= 3 and steps == sorted(steps)
    assert run.config["loss"]["temperature"] == cfg.loss.temperature
    assert run.config["data"]["source"]["_target_"] == "contrastive.data.sources.FashionMNIST"
    assert run.run["group"] == "fashion_mnist_simclr" and run.run["job_type"] == "pretrain"
    for key in ("train/lr", "train/temperature", "train/pos_sim", "train/neg_sim"):
        assert run.metric(key), key
    assert run.metric("val/knn_top1") and run.metric("val/online_top1")


def test_cifar10_experiment_runs_a_few_steps(compose_cfg: Any, tmp_path: Path) -> None:
    root = cifar10_root(tmp_path)
    cfg = compose_cfg(
        "experiment=cifar10_simclr",
        f"data.source.root={root}",
        "data.source.verify=false",  # a tiny fixture under the official file names
        "data.batch_size=16",
        "data.eval_batch_size=32",
        "logger=csv",
        *FAST,
    )
    metrics = pretrain(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    pretrained = load_pretrained(tmp_path / "backbone.pt")
    backbone = pretrained.backbone
    assert pretrained.spec == {
        "name": "resnet18",
        "kwargs": {"in_channels": 3, "small_stem": True},
    }
    assert backbone(torch.zeros(1, 3, 32, 32)).shape == (1, 512)


def test_standard_stem_resnet_backbone_loads_into_torchvision(
    compose_cfg: Any, tmp_path: Path
) -> None:
    cfg = compose_cfg(
        "data=synthetic",
        "data.source.channels=3",
        "data.source.image_size=32",
        "data.source.num_samples=64",
        "data.batch_size=16",
        "augment=cifar",
        "backbone=resnet18",
        "backbone.small_stem=false",
        "logger=none",
        *FAST,
    )
    pretrain(cfg)
    payload = torch.load(tmp_path / "backbone.pt", weights_only=True)
    reference = torchvision.models.resnet18()
    missing, unexpected = reference.load_state_dict(payload["state_dict"], strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "none"])
def test_other_loggers(compose_cfg: Any, tmp_path: Path, logger: str) -> None:
    cfg = compose_cfg(
        "data=synthetic",
        "data.source.num_samples=64",
        "data.batch_size=16",
        f"logger={logger}",
        *FAST,
    )
    pretrain(cfg)
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert {"csv": "csv", "tensorboard": "tensorboard", "none": "metrics.json"}[logger] in written
    assert "wandb" not in written


def run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )


def assert_clear_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_cli_missing_dataset(tmp_path: Path) -> None:
    result = run_cli(
        "data=cifar10",
        "augment=cifar",
        f"data.source.root={tmp_path / 'nothing'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_clear_error(result, "CIFAR-10", "data.source.download=true")


def test_cli_unknown_config_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli("backbone=vgg11", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_clear_error(result, "vgg11", "small_cnn", "resnet18")


def test_cli_bad_temperature(tmp_path: Path) -> None:
    result = run_cli(
        "loss.temperature=-0.5",
        "data=synthetic",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_clear_error(result, "temperature", "-0.5")


def test_cli_grayscale_backbone_fed_rgb(tmp_path: Path) -> None:
    result = run_cli(
        "data=synthetic",
        "data.source.channels=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_clear_error(result, "3-channel", "1-channel", "augment=cifar")


def test_resume_auto_continues_from_last_checkpoint(compose_cfg: Any, tmp_path: Path) -> None:
    """A requeued job reruns in the same directory and continues where it stopped."""
    common = ["data=synthetic", "data.source.num_samples=128", "data.batch_size=32", "logger=none"]
    first = pretrain(compose_cfg(*common, "trainer.max_epochs=1"))
    assert first["train/epochs"] == 1
    steps_per_epoch = 128 // 32
    before = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["global_step"] == steps_per_epoch
    second = pretrain(compose_cfg(*common, "trainer.max_epochs=2"))
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["train/epochs"] == 2
    assert after["global_step"] == 2 * steps_per_epoch  # one more epoch, not two


def test_resume_from_a_missing_file_is_a_clear_error(compose_cfg: Any, tmp_path: Path) -> None:
    from contrastive.errors import ConfigError

    cfg = compose_cfg("data=synthetic", "logger=none", f"resume={tmp_path}/x.ckpt")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        pretrain(cfg)


def write_image_folder(root: Path, classes: list[str] | None, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in [root / c for c in classes] if classes else [root]:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.parametrize("labelled", [True, False])
def test_image_folder_pretraining(compose_cfg: Any, tmp_path: Path, labelled: bool) -> None:
    data = tmp_path / "images"
    classes = ["cat", "dog"] if labelled else None
    write_image_folder(data / "train", classes, 12)
    if labelled:
        write_image_folder(data / "val", classes, 5)
    cfg = compose_cfg(
        "data=image_folder",
        f"data.source.root={data}",
        "data.num_classes=2",
        "data.source.image_size=32",
        "data.num_workers=0",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        f"data.source.labelled={labelled}",
        "augment=cifar",
        "logger=none",
        *FAST,
    )
    metrics = pretrain(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    if labelled:
        assert metrics["val/knn_num_test_samples"] == 10  # every val image, once
    else:
        assert "val/knn_top1" not in metrics


SYNTH = ["data=synthetic", "data.source.num_samples=512", "data.batch_size=64", "logger=none"]


def test_online_probe_survives_the_final_validation(compose_cfg: Any) -> None:
    """2 epochs with validation every 3: the score comes from the validate() after fit,
    which must use the head trained during fit (a fresh head scores ~10%)."""
    metrics = pretrain(compose_cfg(*SYNTH, "trainer.max_epochs=2", *FAST[3:]))
    assert metrics["val/online_top1"] > 0.4


def test_without_knn_the_checkpoint_keeps_only_last(compose_cfg: Any, tmp_path: Path) -> None:
    cfg = compose_cfg(*SYNTH, "callbacks.knn=null", "trainer.max_epochs=1", *FAST[3:])
    metrics = pretrain(cfg)
    assert "val/knn_top1" not in metrics and "val/online_top1" in metrics
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=1024", "needs at least 1024 training images"),
        ("method.lr_scaling=linaer", "lr_scaling must be none, linear or sqrt"),
        ("optim.optimizer.lr=-1", "optim:"),
        ("optim.scheduler.warmup_epochs=-1", "warmup_epochs must be >= 0"),
        ("trainer.max_epochs=-1", "needs a finite length"),
        ("data.batch_size=1", r"data.batch_size=1 x 1 process\(es\) is a global batch of one"),
        ("loss.temperature=0", r"temperature must be a finite number > 0, got 0"),
        ("loss.block_size=atuo", r"block_size must be 'auto', null .* got 'atuo'"),
        (
            "method.compile_mode=fastest",
            r"method.compile_mode must be one of default, .* 'fastest'",
        ),
        ("augment.crop_scale=[0.9,0.2]", r"crop_scale must be \(min, max\) with 0 < min <= max"),
        (
            "backbone=resnet18 backbone.small_stem=false augment.image_size=16",
            r"augment.image_size=16 is too small for backbone resnet18: its layer4.0.conv1",
        ),
    ],
)
def test_bad_values_stop_before_training(compose_cfg: Any, override: str, message: str) -> None:
    from hydra.errors import InstantiationException

    from contrastive.errors import ConfigError

    # InstantiationException: a constructor refused the value (the CLI prints its message).
    with pytest.raises((ConfigError, InstantiationException), match=message):
        pretrain(compose_cfg(*SYNTH, *override.split(), *FAST[3:]))


def test_image_folder_class_count_must_match(compose_cfg: Any, tmp_path: Path) -> None:
    from contrastive.errors import ConfigError

    write_image_folder(tmp_path / "images" / "train", ["a", "b", "c"], 4)
    write_image_folder(tmp_path / "images" / "val", ["a", "b", "c"], 2)
    base = [
        "data=image_folder",
        f"data.source.root={tmp_path / 'images'}",
        "data.source.image_size=32",
        "data.num_workers=0",
        "data.batch_size=4",
        "augment=cifar",
        "logger=none",
        *FAST,
    ]
    with pytest.raises(ConfigError, match=r"data.num_classes=2 .* has 3 classes"):
        pretrain(compose_cfg(*base, "data.num_classes=2"))
    metrics = pretrain(compose_cfg(*base))  # null: counted from the folders
    assert metrics["val/knn_num_test_samples"] == 6


@pytest.mark.parametrize(
    "options",
    [
        ["trainer.precision=bf16-mixed", "method.channels_last=true"],
        ["method.compile=true"],
    ],
    ids=["bf16-mixed+channels_last", "compile"],
)
def test_throughput_options_train_on_the_cpu(compose_cfg: Any, options: list[str]) -> None:
    """Each throughput option really changes how the step runs, and the job still learns:
    bf16 autocast reaches the backbone's convolutions (the loss stays float32) and compile
    captures graphs (the checkpointed parameter names stay those of the eager model)."""
    torch._dynamo.reset()
    seen: dict[str, torch.dtype] = {}
    captured_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]

    cfg = compose_cfg(
        *SYNTH,
        "backbone.widths=[16,32]",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.media=null",
        *options,
        *FAST[3:],
    )
    datamodule, model, _, trainer = build(cfg)
    bf16 = "trainer.precision=bf16-mixed" in options
    if bf16:
        first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(
            lambda module, inputs, output: seen.setdefault("conv", output.dtype) and None
        )
    trainer.fit(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert math.isfinite(metrics["train/loss"]) and metrics["val/online_top1"] > 0.4
    if bf16:
        assert seen["conv"] == torch.bfloat16
        assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    else:
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > captured_before
        checkpoint = torch.load(Path(cfg.output_dir) / "checkpoints" / "last.ckpt")
        assert not any("_orig_mod" in key for key in checkpoint["state_dict"])


class _Data:
    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size


@pytest.mark.parametrize(
    ("saved_world", "saved_batch", "world", "configured", "expected"),
    [
        (2, 32, 1, 32, 64),  # 2 -> 1: the per-process batch doubles
        (1, 64, 2, 64, 32),  # 1 -> 2: it halves
        (2, 32, 4, 32, 16),
        (2, 32, 2, 32, 32),  # the same layout: unchanged
        (2, 32, 2, 48, 32),  # the same world, another configured batch: the run's wins
    ],
)
def test_a_resume_keeps_the_global_batch(
    saved_world: int, saved_batch: int, world: int, configured: int, expected: int
) -> None:
    from contrastive.jobs.pretrain import keep_global_batch

    data = _Data(configured)
    keep_global_batch(data, {"world_size": saved_world, "batch_size": saved_batch}, world)
    assert data.batch_size == expected


def test_a_global_batch_that_does_not_divide_is_refused_naming_both() -> None:
    from contrastive.errors import ConfigError
    from contrastive.jobs.pretrain import keep_global_batch

    data = _Data(32)
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\) with data.batch_size=32 "):
        keep_global_batch(data, {"world_size": 2, "batch_size": 32}, 3)
    assert data.batch_size == 32
    keep_global_batch(data, {}, 3)  # a checkpoint from before the layout was recorded
    assert data.batch_size == 32
