"""Every pretraining method end to end: it composes, trains a few steps on the CPU, writes
``backbone.pt`` (the online backbone, never the momentum copy), keeps its momentum encoder
and queue in its checkpoint, and the evaluation jobs (kNN, linear probe, distillation) take
its output unchanged. One pretrained run per method, shared by its tests. Then the bad
inputs each method refuses before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from contrastive.cli import compose_job, run_job
from contrastive.jobs.distill import distill
from contrastive.jobs.knn import knn_eval
from contrastive.jobs.linear_probe import linear_probe
from contrastive.jobs.pretrain import pretrain
from contrastive.methods import METHODS
from tests.helpers.formats import save
from tests.helpers.jobs import DATA, QUIET, run_job_in, run_script

# 256 synthetic images in batches of 64: 4 steps, then the kNN and online-probe scorers.
PRETRAIN = [*DATA, "data.batch_size=64", "backbone.widths=[8,16]", "trainer.max_epochs=1"]
QUEUED = {"moco_v2": "method.queue_length=512", "nnclr": "method.queue_length=256"}


@pytest.fixture(scope="module", params=sorted(METHODS))
def method_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    name = request.param
    run = tmp_path_factory.mktemp(name)
    extra = [QUEUED[name]] if name in QUEUED else []
    run_job_in(run, pretrain, "pretrain", f"method={name}", *PRETRAIN, *extra, *QUIET)
    return name, run


def test_every_method_trains_and_writes_its_online_backbone(method_run: tuple[str, Path]) -> None:
    name, run = method_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/epochs"] == 1 and np.isfinite(metrics["train/loss"])
    assert metrics["val/knn_top1"] > 0.2  # 10 learnable classes, chance 0.1
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["state_dict"]
    exported = torch.load(run / "backbone.pt", weights_only=True)["state_dict"]
    for key, value in exported.items():  # the online (query) backbone
        assert torch.equal(value, state[f"backbone.{key}"])
    optimised = sum(len(g["params"]) for g in checkpoint["optimizer_states"][0]["param_groups"])
    if name in ("moco_v2", "moco_v3"):
        momentum = {k: v for k, v in state.items() if k.startswith("momentum_encoder.")}
        assert momentum, "the momentum encoder is in the checkpoint"
        # it followed the online weights, but is not them (momentum < 1 and 4 steps)
        key = next(k for k in exported if k.endswith("weight"))
        copy = state[f"momentum_encoder.encoder.backbone.{key}"]
        assert not torch.equal(copy, exported[key])
        online = [k for k in state if not k.startswith("momentum_encoder.")]
        assert optimised < len(online) + len(momentum)  # not in the optimiser
    if name in QUEUED:
        assert int(state["queue.filled"]) == 256 if name == "nnclr" else 512
        assert state["queue.queue"].abs().sum() > 0
    if name in ("moco_v3", "nnclr"):
        assert any(k.startswith("predictor.") for k in state)


def test_every_method_is_evaluated_by_the_evaluation_jobs(
    method_run: tuple[str, Path], tmp_path: Path
) -> None:
    _, run = method_run
    knn = run_job_in(tmp_path / "knn", knn_eval, "knn", f"pretrained={run}", *DATA, "logger=none")
    monitor = json.loads((run / "metrics.json").read_text())
    assert knn["knn/test_top1"] == pytest.approx(monitor["val/knn_top1"], abs=1e-6)
    probe_dir = tmp_path / "probe"
    probe = run_job_in(
        probe_dir,
        linear_probe,
        "linear_probe",
        f"pretrained={run}",
        *DATA,
        "probe.batch_size=32",
        "probe.optimizer.lr=1e-2",
        "trainer.max_epochs=3",
        *QUIET,
    )
    assert probe["probe/test_top1"] > 0.2
    student = run_job_in(
        tmp_path / "distill",
        distill,
        "distill",
        f"teacher={probe_dir}",
        *DATA,
        "data.batch_size=32",
        "student.widths=[8,16]",
        "trainer.max_epochs=1",
        *QUIET,
    )
    assert student["distill/teacher_top1"] == pytest.approx(probe["probe/test_top1"])
    assert 0 <= student["distill/student_top1"] <= 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_with_local_views(name: str, tmp_path: Path) -> None:
    """Multi-crop: 2 global 28 px views and 4 local 14 px views of each image, two steps.
    The loss is finite and the queues hold the global views' keys only."""
    overrides = ["augment.local_views=4", "augment.local_size=14", "trainer.limit_train_batches=2"]
    extra = [QUEUED[name]] if name in QUEUED else []
    metrics = run_job_in(
        tmp_path, pretrain, "pretrain", f"method={name}", *PRETRAIN, *overrides, *extra, *QUIET
    )
    assert np.isfinite(metrics["train/loss"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["contrastive"]["recipe"]["local_views"] == 4
    if name in QUEUED:  # 2 steps of 64 images: MoCo v2 2 global keys each, NNCLR 1
        expected = {"moco_v2": 2 * 2 * 64, "nnclr": 2 * 64}[name]
        assert int(checkpoint["state_dict"]["queue.filled"]) == expected


# --- refused before any work, with one message ----------------------------------------------
def refused(run_dir: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    """The job run as its entry point runs it (:func:`contrastive.cli.run_job`): exit 2,
    one message on stderr, nothing written to the run directory."""
    cfg = compose_job(run_dir, "pretrain", *overrides, "logger=none")
    try:
        with pytest.raises(SystemExit) as stop:
            run_job(pretrain, cfg)
    finally:
        GlobalHydra.instance().clear()
    assert stop.value.code == 2
    assert not (run_dir / "checkpoints").exists()
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["method=moco_v2", "method.queue_length=1000"],
            r"method\.queue_length=1000 is not a multiple of the global batch 64 .*"
            r"method\.queue_length=1024",
        ),
        (
            ["method=nnclr", "method.queue_length=100"],
            r"method\.queue_length=100 is not a multiple of the global batch 64",
        ),
        (
            ["method=moco_v2", "method.momentum=1.5"],
            r"method\.momentum must be a momentum in \[0, 1\], got 1\.5",
        ),
        (
            ["method=moco_v3", "method.momentum_end=-1"],
            r"method\.momentum_end must be a momentum in \[0, 1\], got -1",
        ),
        (["method=moco_v2", "method.shuffle_bn=always"], r"method\.shuffle_bn must be one of"),
        (
            ["augment.local_views=2", "augment.local_size=40"],
            r"local_size must be a positive size at most image_size=28 .*, got 40",
        ),
        (
            ["augment.local_views=2", "augment.local_size=1"],
            r"augment\.local_size=1 is too small for backbone small_cnn",
        ),
        (["method=moco_v2", "loss=dclw"], r"loss\.weighting='vmf' \(DCLW\) is not defined"),
        (
            ["loss=dclw", "augment.local_views=2"],
            r"needs one positive per anchor: .* \(augment\.local_views=2\)",
        ),
        (["method=supcon", "loss=dclw"], r"no labels \(method=supcon\); use loss=dcl"),
    ],
    ids=[
        "queue",
        "support_set",
        "momentum",
        "momentum_end",
        "shuffle_bn",
        "local_size",
        "tiny",
        "dclw_moco_v2",
        "dclw_local_views",
        "dclw_supcon",
    ],
)
def test_bad_method_settings_are_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], message: str
) -> None:
    stderr = refused(tmp_path / "run", capsys, *PRETRAIN, *overrides)
    assert re.search(message, stderr), stderr
    assert "Traceback" not in stderr


def test_the_queue_refusal_from_the_command_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = ["method=moco_v2", "method.queue_length=1000", "logger=none"]
    result = run_script("pretrain.py", *PRETRAIN, *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: method.queue_length=1000 is not a multiple" in result.stderr
    assert "Traceback" not in result.stderr


def test_supcon_without_labels_is_refused_naming_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for index in range(8):
        save(folder / "train" / f"{index}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    stderr = refused(
        tmp_path / "run",
        capsys,
        "method=supcon",
        "data=image_folder",
        f"data.source.root={folder}",
        "data.source.labelled=false",
        "augment=cifar",
        "data.batch_size=4",
        "data.num_workers=0",
    )
    assert "method=supcon trains on class labels, but data" in stderr, stderr
    assert "data 'image_folder' has none" in stderr
