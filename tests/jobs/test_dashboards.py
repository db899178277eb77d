"""What reaches W&B and the run directory: metrics, pictures, tables, run organisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive.jobs.demo import ROWS, log_results_to_wandb
from contrastive.jobs.linear_probe import linear_probe
from contrastive.jobs.pretrain import pretrain
from contrastive.jobs.run import git_commit
from contrastive.report import build_report
from tests.helpers.jobs import run_job_in
from tests.helpers.wandb_reader import WandbRun, iter_records, read_run, wait_for_run

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
PRETRAIN = [
    "data=synthetic",
    "data.source.num_samples=512",
    "data.batch_size=64",
    "backbone.widths=[8,16]",
    "trainer.max_epochs=3",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=2",
    "callbacks.media.every_n_epochs=2",
    "callbacks.media.table_rows=16",
    "experiment_name=dashboard_test",
    *QUIET,
]
TRAIN_KEYS = [
    "train/loss",
    "train/lr",
    "train/temperature",
    "train/pos_sim",
    "train/neg_sim",
    "train/alignment",
    "train/uniformity",
    "train/rankme",
    "train/grad_norm",
    "train/views_per_sec",
    "val/knn_top1",
    "val/online_top1",
]
PRETRAIN_MEDIA = ["media/views", "media/similarities", "media/embedding_map", "media/curves"]


def images_logged(run: WandbRun, key: str) -> int:
    return sum(
        1
        for row in run.history
        if isinstance(row.get(key), dict) and row[key].get("_type") == "images/separated"
    )


def artifact_types(run: WandbRun) -> list[str]:
    records = iter_records(run.path)
    return [r.artifact.type for r in records if r.WhichOneof("record_type") == "artifact"]


def has_variance(path: Path) -> bool:
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    return pixels.std() > 10  # drawn content, not a blank canvas


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pretrain_dir = tmp_path_factory.mktemp("pretrain")
    run_job_in(pretrain_dir, pretrain, "pretrain", *PRETRAIN)
    probe_dir = tmp_path_factory.mktemp("probe")
    run_job_in(
        probe_dir,
        linear_probe,
        "linear_probe",
        f"pretrained={pretrain_dir}",
        "data=synthetic",
        "data.source.num_samples=512",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        *QUIET,
    )
    return {"pretrain": pretrain_dir, "probe": probe_dir}


def test_pretraining_run_file_has_every_metric_picture_and_the_table(runs: dict[str, Path]) -> None:
    run = wait_for_run(runs["pretrain"] / "wandb")
    keys = run.keys()
    missing = [k for k in TRAIN_KEYS if k not in keys]
    assert not missing, f"not logged: {missing}"
    for key in ("train/alignment", "train/uniformity", "train/rankme", "train/grad_norm"):
        values = [v for _, v in run.metric(key)]
        assert values and all(np.isfinite(values)), key
    rankme = [v for _, v in run.metric("train/rankme")]
    assert min(rankme) >= 1.0 and max(rankme) <= 64  # between 1 and min(batch, dim)
    for key in PRETRAIN_MEDIA:
        assert images_logged(run, key) >= 1, key
    tables = [row["media/embeddings"] for row in run.history if "media/embeddings" in row]
    assert tables and tables[0]["_type"] == "table-file" and tables[0]["nrows"] == 16
    assert run.run["group"] == "dashboard_test" and run.run["job_type"] == "pretrain"
    assert run.config["git_commit"] == git_commit()
    assert run.config["backbone"]["widths"] == [8, 16]
    assert "run_table" in artifact_types(run)  # the embeddings table
    assert "model" not in artifact_types(run)  # offline: no backbone artifact unless asked


def test_probe_run_joins_the_pretraining_group_with_its_config(runs: dict[str, Path]) -> None:
    run = wait_for_run(runs["probe"] / "wandb")
    assert run.run["group"] == "dashboard_test" and run.run["job_type"] == "linear_probe"
    assert run.config["pretrain_config"]["backbone"]["widths"] == [8, 16]
    assert run.config["git_commit"] == git_commit()
    logged = run.keys()
    for key in ("probe/test_top1", "probe/test_top5", "probe/test_nll", "probe/train_loss"):
        assert key in logged, key
    assert images_logged(run, "probe/confusion_matrix") >= 1


def test_the_same_pictures_are_pngs_with_real_content(runs: dict[str, Path]) -> None:
    media = runs["pretrain"] / "media"
    expected = ["views.png", "curves.png", "similarities_epoch000.png"]
    expected += ["embedding_map_epoch001.png", "embedding_map_epoch002.png"]
    for name in expected:
        assert has_variance(media / name), name
    assert has_variance(runs["probe"] / "confusion_matrix.png")
    history = [json.loads(line) for line in (media / "history.jsonl").read_text().splitlines()]
    assert {"train/loss", "val/knn_top1"} <= set().union(*history)


def test_view_grid_shows_two_different_views_of_each_image(runs: dict[str, Path]) -> None:
    grid = np.asarray(Image.open(runs["pretrain"] / "media" / "views.png").convert("L"), float)
    top, bottom = grid[: grid.shape[0] // 2], grid[grid.shape[0] // 2 :]
    assert np.abs(top - bottom).mean() > 5  # augmentation changed the pixels


def test_report_compares_runs_side_by_side(runs: dict[str, Path], tmp_path: Path) -> None:
    report = build_report([runs["pretrain"], runs["probe"]], tmp_path / "report")
    text = report.read_text()
    pretrain_metrics = json.loads((runs["pretrain"] / "metrics.json").read_text())
    probe_metrics = json.loads((runs["probe"] / "metrics.json").read_text())
    assert f"{100 * pretrain_metrics['val/knn_top1']:.2f}%" in text
    assert f"{100 * probe_metrics['probe/test_top1']:.2f}%" in text
    assert has_variance(tmp_path / "report" / "curves.png")
    assert "views.png" in text and "confusion_matrix.png" in text
    with pytest.raises(FileNotFoundError, match=r"holds no metrics\.json"):
        build_report([tmp_path / "empty"], tmp_path / "nothing")


def test_backbone_artifact_when_asked_offline(tmp_path: Path) -> None:
    overrides = [o for o in PRETRAIN if not o.startswith(("trainer.max_epochs", "callbacks."))]
    run_job_in(
        tmp_path,
        pretrain,
        "pretrain",
        *overrides,
        "trainer.max_epochs=1",
        "log_artifacts=true",
        "callbacks=minimal",
    )
    run = wait_for_run(tmp_path / "wandb")
    assert artifact_types(run).count("model") == 1


def test_demo_results_table_is_logged_in_the_pretraining_group(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    (out / "pretrain").mkdir(parents=True)
    (out / "pretrain" / "wandb").mkdir()
    (out / "pretrain" / "backbone.pt").write_bytes((runs["pretrain"] / "backbone.pt").read_bytes())
    metrics: dict[str, dict[str, Any]] = {job: {key: 0.5} for _, job, key in ROWS}
    log_results_to_wandb(out, metrics, "| method | top-1 |")
    runs_logged = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs_logged) == 1
    run = wait_for_run(runs_logged[0])
    assert run.run["job_type"] == "demo" and run.run["group"] == "dashboard_test"
    assert run.config["git_commit"] == git_commit()
    assert run.config["pretrain_config"]["experiment_name"] == "dashboard_test"
    assert any(row.get("demo/results", {}).get("_type") == "table-file" for row in run.history)
    assert torch.load(out / "pretrain" / "backbone.pt", weights_only=True)["git_commit"]
    assert read_run(runs_logged[0]).summary["demo/results_md"] == "| method | top-1 |"


def test_drawing_pictures_does_not_change_what_the_run_learns(tmp_path: Path) -> None:
    """The media and health callbacks draw random numbers (PCA) and read the model; the
    trained weights must be bit-identical with them and without them."""
    overrides = [o for o in PRETRAIN if not o.startswith("trainer.max_epochs")]
    common = [*overrides, "trainer.max_epochs=2", "logger=none"]
    run_job_in(tmp_path / "with", pretrain, "pretrain", *common)
    run_job_in(
        tmp_path / "without", pretrain, "pretrain", *common, "~callbacks.media", "~callbacks.health"
    )
    assert (tmp_path / "with" / "media" / "embedding_map_epoch001.png").is_file()
    assert not (tmp_path / "without" / "media").exists()
    with_media = torch.load(tmp_path / "with" / "backbone.pt", weights_only=True)["state_dict"]
    without = torch.load(tmp_path / "without" / "backbone.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(with_media[k], without[k]) for k in without)
