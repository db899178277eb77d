"""Tests for tests/helpers/wandb_reader.py against real offline wandb runs (no network)."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.wandb_reader import (
    BLOCK_SIZE,
    TruncatedRunWarning,
    WandbFileError,
    find_run_file,
    iter_chunks,
    iter_records,
    pb,
    read_run,
    wait_for_run,
)

N_STEPS = 300  # ~200 KB of history/summary records: spans several 32 KiB blocks
BLOB = "0123456789abcdef" * 4500  # 72 KB config value: one FIRST/MIDDLE/LAST record


def _loss(step: int) -> float:
    return 1.0 / (step + 1)


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Offline, silent W&B writing under a private temp dir for this module."""
    wandb_dir = tmp_path_factory.mktemp("wandb_env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(wandb_dir))
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONSOLE", "off")
        mp.setenv("WANDB_DISABLE_GIT", "true")
        mp.delenv("WANDB_API_KEY", raising=False)
        yield wandb_dir


@dataclass
class LoggedRun:
    base: Path  # the dir= given to wandb.init
    run_id: str


@pytest.fixture(scope="module")
def logged_run(wandb_env: Path, tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    import wandb

    base = tmp_path_factory.mktemp("plain_run")
    run = wandb.init(
        mode="offline",
        dir=base,
        project="p",
        group="g",
        job_type="pretrain",
        config={"a": 1, "nested": {"b": 2}},
        tags=["t1"],
    )
    try:
        # a 72 KB config value becomes one record split into FIRST/MIDDLE/LAST chunks
        # (added after init so wandb's debug log does not echo it into test output)
        run.config.update({"blob": BLOB})
        for step in range(N_STEPS):
            run.log({"loss": _loss(step), "acc": step / N_STEPS, "epoch": step // 100}, step=step)
        image = wandb.Image(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
        table = wandb.Table(columns=["name", "score"], data=[["x", 1], ["y", 2]])
        run.log({"samples": image, "preds": table, "nested": {"x": 7}}, step=N_STEPS)
        run.summary["best_acc"] = 0.875
        run.summary["final"] = {"top1": 0.5}
        run_id = run.id
    finally:
        run.finish()
    # finish() returns before wandb-core has flushed the last block of the log
    wait_for_run(base)
    return LoggedRun(base, run_id)


# --------------------------------------------------------------------------- #
# Round trip through a real offline run
# --------------------------------------------------------------------------- #


def test_offline_run_round_trip(logged_run: LoggedRun) -> None:
    r = read_run(logged_run.base)

    assert r.path.name == f"run-{logged_run.run_id}.wandb"
    assert r.finished and r.exit_code == 0 and not r.truncated

    # run metadata
    assert r.run["run_id"] == logged_run.run_id
    assert r.run["project"] == "p"
    assert r.run["group"] == "g"
    assert r.run["job_type"] == "pretrain"
    assert r.run["tags"] == ["t1"]
    assert r.run["display_name"] == ""  # names are assigned by the server; empty offline

    # config: values decoded, nested dicts kept, wandb's _wandb moved aside
    assert r.config == {"a": 1, "nested": {"b": 2}, "blob": BLOB}
    assert "_wandb" not in r.config

    # history: one row per step, exact values and steps
    assert len(r.history) == N_STEPS + 1
    assert r.metric("loss") == [(s, _loss(s)) for s in range(N_STEPS)]
    assert r.metric("acc") == [(s, s / N_STEPS) for s in range(N_STEPS)]
    assert r.metric("epoch")[-1] == (N_STEPS - 1, 2)
    assert [row["_step"] for row in r.history] == list(range(N_STEPS + 1))
    assert r.metric(("nested", "x")) == [(N_STEPS, 7)]
    assert r.values("loss")[:3] == [1.0, 0.5, 1 / 3]
    assert r.metric("missing") == []
    keys = r.keys()
    assert {"loss", "acc", "epoch", "samples", "preds", "nested", "_step", "_runtime"} <= keys
    assert "samples/_type" not in keys  # media dicts are rebuilt, not flattened

    # media: image and table entries present and pointing at saved files
    [image] = r.media("samples")
    assert image["_type"] == "image-file"
    assert image["format"] == "png"
    assert (image["width"], image["height"]) == (8, 8)
    assert image["path"].startswith("media/images/") and image["path"].endswith(".png")
    [table] = r.media("preds")
    assert table["_type"] == "table-file"
    assert (table["nrows"], table["ncols"]) == (2, 2)
    assert table["path"].startswith("media/table/")
    assert r.media("loss") == []
    assert image["path"] in r.files and table["path"] in r.files
    run_dir = r.path.parent
    assert (run_dir / "files" / image["path"]).is_file()
    saved_table = json.loads((run_dir / "files" / table["path"]).read_text())
    assert saved_table["columns"] == ["name", "score"]
    assert saved_table["data"] == [["x", 1], ["y", 2]]

    # summary: explicit values plus the automatic last-value summary
    assert r.summary["best_acc"] == 0.875
    assert r.summary["final"] == {"top1": 0.5}
    assert r.summary["loss"] == _loss(N_STEPS - 1)
    assert r.summary["_step"] == N_STEPS
    assert r.summary["samples"]["_type"] == "image-file"

    assert r.record_counts["history"] == N_STEPS + 1
    assert r.record_counts["run"] == 1


def test_file_spans_blocks_and_uses_multi_chunk_records(logged_run: LoggedRun) -> None:
    file = find_run_file(logged_run.base)
    size = file.stat().st_size
    assert size > 4 * BLOCK_SIZE
    chunks = list(iter_chunks(file))
    types = [t for _, t, _ in chunks]
    assert {1, 2, 3, 4} <= set(types)  # FULL, FIRST, MIDDLE, LAST all occur
    # header sits at the start of block 0: the first chunk follows it directly
    assert chunks[0][0] == 7
    # no chunk crosses a block boundary
    for offset, _, payload in chunks:
        assert offset // BLOCK_SIZE == (offset + 7 + len(payload) - 1) // BLOCK_SIZE
    # the big config update is one record split over >= 3 chunks
    first = types.index(2)
    assert types[first + 1] == 3 and 4 in types[first + 1 :]


def test_path_resolution(logged_run: LoggedRun, tmp_path: Path) -> None:
    file = find_run_file(logged_run.base)
    run_dir = file.parent
    assert run_dir.name.startswith("offline-run-")
    for p in (file, str(file), run_dir, run_dir.parent, logged_run.base):
        assert find_run_file(p) == file
    assert read_run(run_dir).run["run_id"] == logged_run.run_id

    with pytest.raises(FileNotFoundError, match="no offline-run"):
        read_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such"):
        read_run(tmp_path / "nope")

    for name in ("offline-run-20250101_000000-aaaa", "offline-run-20250101_000001-bbbb"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
        shutil.copy(file, tmp_path / "wandb" / name / file.name)
    with pytest.raises(ValueError, match="2 offline runs"):
        read_run(tmp_path)
    assert read_run(tmp_path / "wandb" / "offline-run-20250101_000001-bbbb").finished


# --------------------------------------------------------------------------- #
# Damaged files
# --------------------------------------------------------------------------- #


def _copy_prefix(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n])
    return dst


def test_truncated_tail_warns_and_returns_records_so_far(
    logged_run: LoggedRun, tmp_path: Path
) -> None:
    file = find_run_file(logged_run.base)
    full = read_run(file)
    cut = _copy_prefix(file, tmp_path / "run-cut.wandb", file.stat().st_size - 3)

    with pytest.warns(TruncatedRunWarning, match="truncated"):
        part = read_run(cut)
    assert part.truncated and not part.finished
    assert part.run == full.run and part.config == full.config
    assert 0 < len(part.history) <= len(full.history)
    assert part.history == full.history[: len(part.history)]

    with pytest.raises(WandbFileError, match="truncated"):
        read_run(cut, strict=True)
    with pytest.raises(WandbFileError, match="truncated"):
        list(iter_chunks(cut))


def test_wait_for_run_times_out_on_unfinished_file(logged_run: LoggedRun, tmp_path: Path) -> None:
    file = find_run_file(logged_run.base)
    run_dir = tmp_path / "offline-run-20250101_000000-cut"
    run_dir.mkdir()
    cut = _copy_prefix(file, run_dir / "run-cut.wandb", 3 * BLOCK_SIZE)
    with pytest.raises(TimeoutError, match="finished=False"):
        wait_for_run(tmp_path, timeout=0.2)
    with pytest.raises(TimeoutError, match="no such W&B run"):
        wait_for_run(tmp_path / "elsewhere", timeout=0.1)
    cut.write_bytes(b":W&")  # header not flushed yet: keeps polling
    with pytest.raises(TimeoutError, match="shorter than the 7-byte header"):
        wait_for_run(cut, timeout=0.1)
    cut.write_bytes(file.read_bytes())  # complete file: returns
    assert wait_for_run(run_dir, timeout=5).finished
    cut.write_bytes(b"garbage" * 3)  # corruption is not waited on
    with pytest.raises(WandbFileError, match="bad header"):
        wait_for_run(cut, timeout=5)


def test_truncated_inside_multi_chunk_record(logged_run: LoggedRun, tmp_path: Path) -> None:
    file = find_run_file(logged_run.base)
    chunks = list(iter_chunks(file))
    first_offset = next(off for off, t, _ in chunks if t == 2)
    # cut at the end of the block holding the FIRST chunk: every chunk read is whole,
    # but the record it starts is incomplete
    cut_at = (first_offset // BLOCK_SIZE + 1) * BLOCK_SIZE
    cut = _copy_prefix(file, tmp_path / "run-cut.wandb", cut_at)
    with pytest.warns(TruncatedRunWarning, match="inside the record begun at offset"):
        records = list(iter_records(cut))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "exit" not in kinds
    with pytest.warns(TruncatedRunWarning):
        part = read_run(cut)
    assert part.truncated and not part.finished
    assert part.config == {"a": 1, "nested": {"b": 2}}  # the blob update was cut off
    assert part.run["group"] == "g"


def test_garbage_header_raises(tmp_path: Path) -> None:
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not wandb" * 10)
    with pytest.raises(WandbFileError, match="bad header"):
        read_run(bad)
    bad.write_bytes(b"")
    with pytest.raises(WandbFileError, match="shorter than the 7-byte header"):
        read_run(bad)


def test_unknown_version_and_corruption_raise(logged_run: LoggedRun, tmp_path: Path) -> None:
    data = bytearray(find_run_file(logged_run.base).read_bytes())
    bad = tmp_path / "run-bad.wandb"

    versioned = bytearray(data)
    versioned[6] = 9
    bad.write_bytes(bytes(versioned))
    with pytest.raises(WandbFileError, match="version 9"):
        read_run(bad)

    offset = [off for off, _, _ in iter_chunks(find_run_file(logged_run.base))][5]
    flipped = bytearray(data)
    flipped[offset + 8] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    with pytest.raises(WandbFileError, match=f"checksum mismatch in chunk at offset {offset}"):
        read_run(bad)


# --------------------------------------------------------------------------- #
# Block-layout edge cases on hand-built files
# --------------------------------------------------------------------------- #


def _history_record(step: int, pad: int) -> bytes:
    rec = pb.Record()
    rec.history.item.add(key="_step", value_json=str(step))
    rec.history.item.add(key="pad", value_json=json.dumps("z" * pad))
    return rec.SerializeToString()


def _record_of_size(step: int, size: int) -> bytes:
    assert size >= len(_history_record(step, 0)), size
    pad = size - len(_history_record(step, 0))
    while len(out := _history_record(step, pad)) > size:
        pad -= 1
    assert len(out) == size, (len(out), size)
    return out


def _write_log(payloads: list[bytes | None]) -> bytes:
    """Minimal LevelDB-log writer (mirrors wandb-core's). ``None`` zero-fills the block."""
    buf = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))

    def chunk(ctype: int, data: bytes) -> None:
        crc = zlib.crc32(bytes((ctype,)) + data)
        buf.extend(struct.pack("<IHB", crc, len(data), ctype) + data)

    for payload in payloads:
        left = BLOCK_SIZE - len(buf) % BLOCK_SIZE
        if payload is None:
            buf.extend(b"\0" * left)
            continue
        first = True
        rest = payload
        while True:
            left = BLOCK_SIZE - len(buf) % BLOCK_SIZE
            if left < 7:
                buf.extend(b"\0" * left)
                continue
            piece, rest = rest[: left - 7], rest[left - 7 :]
            last = not rest
            chunk((1 if last else 2) if first else (4 if last else 3), piece)
            first = False
            if last:
                break
    return bytes(buf)


def _steps(data: bytes, tmp_path: Path) -> list[Any]:
    f = tmp_path / "run-synthetic.wandb"
    f.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning expected
        return [row["_step"] for row in read_run(f).history]


def test_block_trailer_and_zero_padding(tmp_path: Path) -> None:
    # record 0 leaves exactly 3 bytes in block 0 -> trailer the reader must skip
    r0 = _record_of_size(0, BLOCK_SIZE - 7 - 7 - 3)
    # record 1 fills block 1 exactly; record 2 spans blocks 2..4 (FIRST/MIDDLE/LAST)
    r1 = _record_of_size(1, BLOCK_SIZE - 7)
    r2 = _record_of_size(2, 2 * BLOCK_SIZE + 100)
    data = _write_log([r0, r1, r2, None, _record_of_size(3, 50)])
    assert data[BLOCK_SIZE - 3 : BLOCK_SIZE] == b"\0\0\0"
    assert data[BLOCK_SIZE + 6] == 1 and data[2 * BLOCK_SIZE + 6] == 2
    assert _steps(data, tmp_path) == [0, 1, 2, 3]

    # a zeroed chunk header mid-block ("rest of block is padding") is skipped too
    assert _steps(
        _write_log([_record_of_size(7, 100), None, _record_of_size(8, 40)]), tmp_path
    ) == [
        7,
        8,
    ]


def test_orphan_chunks_are_errors(tmp_path: Path) -> None:
    payload = _record_of_size(0, 40)
    header = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    f = tmp_path / "run-x.wandb"
    for ctype in (3, 4):
        crc = zlib.crc32(bytes((ctype,)) + payload)
        f.write_bytes(header + struct.pack("<IHB", crc, len(payload), ctype) + payload)
        with pytest.raises(WandbFileError, match="without a FIRST chunk"):
            read_run(f)
    crc = zlib.crc32(bytes((9,)) + payload)
    f.write_bytes(header + struct.pack("<IHB", crc, len(payload), 9) + payload)
    with pytest.raises(WandbFileError, match="unknown chunk type 9"):
        read_run(f)


# --------------------------------------------------------------------------- #
# The way the framework uses it: PyTorch Lightning's WandbLogger
# --------------------------------------------------------------------------- #


def test_lightning_wandb_logger(wandb_env: Path, tmp_path: Path) -> None:
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(
        offline=True, save_dir=str(tmp_path), project="contrastive-test", job_type="pretrain"
    )
    steps = [0, 5, 10, 15]
    try:
        logger.log_hyperparams({"lr": 0.1, "model": {"dim": 128}, "augs": ["crop", "flip"]})
        for s in steps:
            logger.log_metrics({"train/loss": _loss(s)}, step=s)
        logger.log_metrics({"val/acc": 0.5}, step=15)  # second log call at the same step
    finally:
        logger.experiment.finish()

    r = wait_for_run(tmp_path)
    assert r.finished
    assert r.run["project"] == "contrastive-test" and r.run["job_type"] == "pretrain"
    assert r.config == {"lr": 0.1, "model": {"dim": 128}, "augs": ["crop", "flip"]}
    # WandbLogger defines trainer/global_step as the step metric for "*"
    assert r.step_metric("train/loss") == "trainer/global_step"
    assert r.metric("train/loss") == [(s, _loss(s)) for s in steps]
    assert r.metric("val/acc") == [(15, 0.5)]
    # wandb's own _step counts log calls, not trainer steps
    assert r.metric("train/loss", step_key="_step") == [(i, _loss(s)) for i, s in enumerate(steps)]
    assert r.summary["train/loss"] == _loss(steps[-1])
    assert {"train/loss", "val/acc", "trainer/global_step"} <= r.keys()
