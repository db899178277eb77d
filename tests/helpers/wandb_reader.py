"""Read a W&B offline run (``run-<id>.wandb``) back into plain Python objects.

Tests use this to check what the framework logged to Weights & Biases without a
network connection: wandb 0.31 has no public reader for the offline transaction
log, and offline runs write no ``wandb-summary.json``.

File format (checked against wandb-core 0.31, ``core/pkg/leveldb/record.go`` and
``core/internal/stream/store.go``):

* A 7-byte header ``b":W&B"``, ``0xBEE1`` as little-endian uint16, version byte 0.
  The header occupies the start of the first 32 KiB block, so the first block
  has ``32768 - 7`` bytes left for records.
* Then the LevelDB log format: 32 KiB blocks of chunks. A chunk is a 7-byte
  header (uint32 checksum, uint16 length, uint8 type; little-endian) plus the
  payload. Types: 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST. Chunks never cross a block
  boundary; fewer than 7 bytes left in a block are zero padding, and an
  all-zero chunk header also means "rest of the block is padding".
* The checksum is **plain CRC-32 (IEEE, ``zlib.crc32``)** of the type byte
  followed by the payload, *not* LevelDB's masked CRC-32C. It is verified.
* Each reassembled payload is a ``wandb.proto.wandb_internal_pb2.Record``.

How the records map onto :class:`WandbRun`:

* History and summary items are written by wandb-core with ``nested_key``
  paths, and dict values are *flattened*: ``run.log({"img": wandb.Image(...)})``
  is stored as items ``["img", "_type"]``, ``["img", "path"]``, ... while a key
  containing a slash such as Lightning's ``"train/loss"`` is one path element
  ``["train/loss"]``. The reader rebuilds the nesting, so a history row is
  ``{"train/loss": 0.5, "img": {"_type": "image-file", "path": ...}}`` and
  ``{"train": {"acc": 1}}`` stays a nested dict. (Joining paths with ``"/"``
  would make ``"train/loss"`` and ``{"train": {"loss": ...}}`` collide and would
  split media dicts into ``img/_type``, ``img/path``, ....)
* Values come from ``value_json`` (json-decoded; ``NaN``/``Infinity`` allowed);
  when only the typed form is present (``x_history_value_encoding``), from the
  typed ``none``/``boolean``/``integer``/``number``/``text``/``json`` field.
* ``config`` merges the run record's initial config and every later config
  record, applying removals. Values in the transaction log are stored *raw*:
  the ``{"value": ..., "desc": ...}`` wrapping only exists in ``config.yaml`` and
  the server API, so nothing is unwrapped (a user value ``{"value": 3}`` is
  returned unchanged). wandb's own ``_wandb`` entry is moved out of ``config``
  into :attr:`WandbRun.wandb_internal`.
* ``summary`` merges the run record's summary and every summary record in order,
  applying removals; it includes wandb's ``_step``/``_runtime``/``_timestamp``/
  ``_wandb`` entries.

Flushing: wandb-core buffers the log in 32 KiB blocks and only writes the last,
partial block when it closes the file, which happens *after* ``run.finish()``
returns. Reading right after ``finish()`` can therefore see a file cut at a
block boundary (or holding nothing but the header). Use :func:`wait_for_run`,
which polls until the run's exit record is on disk, to read a run you just
finished.

Truncation: a file that ends in the middle of a chunk or of a multi-chunk record
(a crashed or still-running writer) is read up to the last complete record and
a :class:`TruncatedRunWarning` is issued (``WandbRun.truncated`` is then True);
pass ``strict=True`` to raise :class:`WandbFileError` instead. Corruption inside
the file (bad header, checksum mismatch, unknown chunk type, chunks out of
order, undecodable protobuf) always raises :class:`WandbFileError`.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import struct
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

# wandb ships no type stubs for its generated protobuf modules; treat them as Any.
pb: Any = importlib.import_module("wandb.proto.wandb_internal_pb2")
#: ``wandb.proto.wandb_internal_pb2.Record`` (alias for annotations).
Record = Any

__all__ = [
    "BLOCK_SIZE",
    "IncompleteHeaderError",
    "TruncatedRunWarning",
    "WandbFileError",
    "WandbRun",
    "find_run_file",
    "iter_chunks",
    "iter_records",
    "pb",
    "read_run",
    "wait_for_run",
]

FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
_FILE_HEADER = struct.Struct("<4sHB")  # 7 bytes
_CHUNK_HEADER = struct.Struct("<IHB")  # 7 bytes: checksum, length, type
BLOCK_SIZE = 32 * 1024

CHUNK_FULL = 1
CHUNK_FIRST = 2
CHUNK_MIDDLE = 3
CHUNK_LAST = 4


class WandbFileError(ValueError):
    """The file is not a readable W&B transaction log (or is corrupt)."""


class IncompleteHeaderError(WandbFileError):
    """The file is shorter than its 7-byte header (e.g. nothing flushed yet)."""


class TruncatedRunWarning(UserWarning):
    """The transaction log ends in the middle of a record."""


class _Truncated(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


# --------------------------------------------------------------------------- #
# Locating the file
# --------------------------------------------------------------------------- #


def find_run_file(path: str | Path) -> Path:
    """Resolve ``path`` to one ``run-*.wandb`` file.

    ``path`` may be the ``.wandb`` file itself, an ``offline-run-*`` directory,
    or a directory holding exactly one ``offline-run-*`` directory either
    directly or under ``wandb/`` (e.g. the ``dir=``/``save_dir=`` given to
    wandb, or ``WANDB_DIR``).
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"no such W&B run file or directory: {p}")

    own = sorted(p.glob("*.wandb"))
    if len(own) == 1:
        return own[0]
    if len(own) > 1:
        raise ValueError(f"{p} holds several .wandb files: {[f.name for f in own]}")

    run_dirs = sorted(d for d in p.glob("offline-run-*") if d.is_dir() and not d.is_symlink())
    if not run_dirs and (p / "wandb").is_dir():
        run_dirs = sorted(
            d for d in (p / "wandb").glob("offline-run-*") if d.is_dir() and not d.is_symlink()
        )
    if not run_dirs:
        raise FileNotFoundError(f"no offline-run-* directory or .wandb file found in {p}")
    if len(run_dirs) > 1:
        raise ValueError(
            f"{p} holds {len(run_dirs)} offline runs, pass one of them: "
            f"{[str(d) for d in run_dirs]}"
        )
    files = sorted(run_dirs[0].glob("*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"expected exactly one .wandb file in {run_dirs[0]}, found {len(files)}"
        )
    return files[0]


# --------------------------------------------------------------------------- #
# Low-level format
# --------------------------------------------------------------------------- #


def _check_header(data: bytes, path: Path) -> None:
    if len(data) < _FILE_HEADER.size:
        raise IncompleteHeaderError(
            f"{path}: not a W&B transaction log: {len(data)} bytes, "
            f"shorter than the {_FILE_HEADER.size}-byte header"
        )
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise WandbFileError(
            f"{path}: not a W&B transaction log: bad header "
            f"{data[: _FILE_HEADER.size]!r} (expected {FILE_IDENT!r} + 0x{FILE_MAGIC:04X})"
        )
    if version != FILE_VERSION:
        raise WandbFileError(f"{path}: unsupported W&B transaction log version {version}")


def _chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(offset, type, payload)`` for each chunk after the file header.

    Raises :class:`_Truncated` when the data ends inside a chunk and
    :class:`WandbFileError` on a checksum mismatch or unknown chunk type.
    """
    pos = _FILE_HEADER.size  # the header lives at the start of block 0
    end = len(data)
    while pos < end:
        block_left = BLOCK_SIZE - pos % BLOCK_SIZE
        if block_left < _CHUNK_HEADER.size:  # block trailer: zero padding
            pos += block_left
            continue
        if end - pos < _CHUNK_HEADER.size:
            raise _Truncated(pos, f"file ends inside a chunk header at offset {pos}")
        checksum, length, ctype = _CHUNK_HEADER.unpack_from(data, pos)
        if checksum == 0 and length == 0 and ctype == 0:  # zeroed rest of block
            pos += block_left
            continue
        start = pos + _CHUNK_HEADER.size
        stop = start + length
        if length > block_left - _CHUNK_HEADER.size:
            raise WandbFileError(
                f"chunk at offset {pos} claims {length} bytes, "
                f"more than its block holds ({block_left - _CHUNK_HEADER.size})"
            )
        if stop > end:
            raise _Truncated(
                pos, f"file ends inside a chunk at offset {pos} ({end - start}/{length} bytes)"
            )
        if ctype not in (CHUNK_FULL, CHUNK_FIRST, CHUNK_MIDDLE, CHUNK_LAST):
            raise WandbFileError(f"unknown chunk type {ctype} at offset {pos}")
        payload = data[start:stop]
        if zlib.crc32(payload, zlib.crc32(bytes((ctype,)))) != checksum:
            raise WandbFileError(f"checksum mismatch in chunk at offset {pos}")
        yield pos, ctype, payload
        pos = stop


def iter_chunks(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(offset, chunk_type, payload)`` for every chunk in a run file.

    Mostly for tests of the format itself; a truncated tail raises
    :class:`WandbFileError`.
    """
    file = find_run_file(path)
    data = file.read_bytes()
    _check_header(data, file)
    try:
        yield from _chunks(data)
    except _Truncated as exc:
        raise WandbFileError(f"{file}: truncated: {exc.reason}") from None


def _payloads(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Reassemble chunks into ``(offset, record_bytes)``."""
    parts: list[bytes] = []
    first_at = -1
    for offset, ctype, payload in _chunks(data):
        if ctype in (CHUNK_FULL, CHUNK_FIRST):
            if parts:
                raise WandbFileError(
                    f"chunk at offset {offset} starts a record while the record "
                    f"begun at offset {first_at} is unfinished"
                )
            if ctype == CHUNK_FULL:
                yield offset, payload
            else:
                parts, first_at = [payload], offset
        else:  # MIDDLE or LAST
            if not parts:
                raise WandbFileError(
                    f"{'MIDDLE' if ctype == CHUNK_MIDDLE else 'LAST'} chunk at offset "
                    f"{offset} without a FIRST chunk"
                )
            parts.append(payload)
            if ctype == CHUNK_LAST:
                yield first_at, b"".join(parts)
                parts = []
    if parts:
        raise _Truncated(first_at, f"file ends inside the record begun at offset {first_at}")


def _records(file: Path, strict: bool) -> Iterator[Record]:
    data = file.read_bytes()
    _check_header(data, file)
    try:
        for offset, payload in _payloads(data):
            record = pb.Record()
            try:
                record.ParseFromString(payload)
            except DecodeError as exc:
                raise WandbFileError(
                    f"{file}: record at offset {offset} is not a wandb Record: {exc}"
                ) from exc
            yield record
    except _Truncated as exc:
        msg = f"{file}: truncated W&B transaction log: {exc.reason}"
        if strict:
            raise WandbFileError(msg) from None
        warnings.warn(msg + "; returning the records before it", TruncatedRunWarning, stacklevel=3)
        raise


def iter_records(path: str | Path, *, strict: bool = False) -> Iterator[Record]:
    """Yield every ``Record`` protobuf in a run file, in write order.

    On truncation: warns and stops (``strict=False``) or raises.
    """
    file = find_run_file(path)
    try:
        yield from _records(file, strict)
    except _Truncated:
        return


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #


def _path_of(item: Any) -> tuple[str, ...]:
    """Key path of a History/Summary/Config item (``key`` or ``nested_key``)."""
    if item.nested_key:
        return tuple(item.nested_key)
    return (item.key,)


def _json_value(text: str) -> Any:
    return json.loads(text)


def _history_value(item: Any) -> Any:
    if item.value_json:
        return _json_value(item.value_json)
    kind = item.WhichOneof("value")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return _json_value(item.json)
    return getattr(item, kind)


def _set_path(target: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _del_path(target: dict[str, Any], path: Sequence[str]) -> None:
    node: Any = target
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _get_path(row: dict[str, Any], key: str | Sequence[str]) -> tuple[bool, Any]:
    path: Sequence[str] = (key,) if isinstance(key, str) else key
    node: Any = row
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _apply_updates(target: dict[str, Any], updates: Any, removes: Any) -> None:
    for item in updates:
        _set_path(target, _path_of(item), _json_value(item.value_json))
    for item in removes:
        _del_path(target, _path_of(item))


@dataclass
class _MetricDef:
    name: str
    glob: str
    step_metric: str


@dataclass
class WandbRun:
    """Everything a test usually wants from an offline W&B run."""

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    #: wandb's own ``_wandb`` config entry, kept out of :attr:`config`.
    wandb_internal: dict[str, Any] = field(default_factory=dict)
    #: ``exit_code`` of the exit record; ``None`` if the run never finished.
    exit_code: int | None = None
    #: True when the file ended inside a record (see module docstring).
    truncated: bool = False
    #: Number of records of each ``Record.record_type`` (e.g. ``"history"``).
    record_counts: dict[str, int] = field(default_factory=dict)
    _metric_defs: list[_MetricDef] = field(default_factory=list, repr=False)

    @property
    def finished(self) -> bool:
        """Whether the run's exit record was written (``run.finish()`` reached)."""
        return self.exit_code is not None

    def keys(self) -> set[str]:
        """All top-level history keys (including ``_step``, ``_runtime``, ...)."""
        out: set[str] = set()
        for row in self.history:
            out.update(row)
        return out

    def step_metric(self, key: str | Sequence[str]) -> str:
        """Step key W&B plots ``key`` against: from ``define_metric``, else ``_step``.

        An exact ``define_metric(name, step_metric=...)`` wins over a glob such
        as Lightning's ``define_metric("*", step_metric="trainer/global_step")``;
        later definitions override earlier ones.
        """
        name = key if isinstance(key, str) else ".".join(key)
        exact = [d for d in self._metric_defs if d.name == name]
        if exact:
            return exact[-1].step_metric or "_step"
        for d in reversed(self._metric_defs):
            if d.glob and fnmatch.fnmatchcase(name, d.glob) and name != d.step_metric:
                return d.step_metric or "_step"
        return "_step"

    def metric(
        self, key: str | Sequence[str], step_key: str | None = None
    ) -> list[tuple[int, Any]]:
        """``(step, value)`` for every history row that contains ``key``.

        ``key`` is a top-level history key (``"train/loss"``) or a path into a
        nested value (``("train", "acc")``). ``step_key`` defaults to
        :meth:`step_metric` -- i.e. ``_step`` for plain ``run.log`` calls and
        ``trainer/global_step`` for PyTorch Lightning's ``WandbLogger`` (which
        defines it as the step metric for ``"*"``). Raises ``KeyError`` when a
        row holding ``key`` lacks the step key.
        """
        skey = step_key if step_key is not None else self.step_metric(key)
        out: list[tuple[int, Any]] = []
        for row in self.history:
            found, value = _get_path(row, key)
            if not found:
                continue
            if skey not in row:
                raise KeyError(f"history row with {key!r} has no step key {skey!r}: {row}")
            out.append((row[skey], value))
        return out

    def values(self, key: str | Sequence[str]) -> list[Any]:
        """Values of ``key`` in every history row containing it, in order."""
        out = []
        for row in self.history:
            found, value = _get_path(row, key)
            if found:
                out.append(value)
        return out

    def media(self, key: str | Sequence[str]) -> list[dict[str, Any]]:
        """Media entries (dicts with ``_type``: images, tables, ...) logged under ``key``."""
        return [v for v in self.values(key) if isinstance(v, dict) and "_type" in v]


def _run_info(rec: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": rec.run_id,
        "entity": rec.entity,
        "project": rec.project,
        "group": rec.run_group,
        "job_type": rec.job_type,
        "display_name": rec.display_name,
        "notes": rec.notes,
        "tags": list(rec.tags),
        "sweep_id": rec.sweep_id,
        "host": rec.host,
        "starting_step": rec.starting_step,
        "resumed": rec.resumed,
    }
    if rec.HasField("start_time"):
        info["start_time"] = rec.start_time.ToDatetime()
    return info


def read_run(path: str | Path, *, strict: bool = False) -> WandbRun:
    """Read an offline W&B run.

    ``path`` is a ``run-*.wandb`` file, an ``offline-run-*`` directory, or a
    directory containing exactly one of those (see :func:`find_run_file`).
    ``strict=True`` turns a truncated file into a :class:`WandbFileError`
    instead of a :class:`TruncatedRunWarning`.
    """
    file = find_run_file(path)
    out = WandbRun(path=file)
    config: dict[str, Any] = {}
    seen_files: set[str] = set()
    records = _records(file, strict)
    try:
        for record in records:
            kind = record.WhichOneof("record_type") or "<none>"
            out.record_counts[kind] = out.record_counts.get(kind, 0) + 1
            if kind == "history":
                row: dict[str, Any] = {}
                for item in record.history.item:
                    _set_path(row, _path_of(item), _history_value(item))
                if "_step" not in row and record.history.HasField("step"):
                    row["_step"] = record.history.step.num
                out.history.append(row)
            elif kind == "summary":
                _apply_updates(out.summary, record.summary.update, record.summary.remove)
            elif kind == "config":
                _apply_updates(config, record.config.update, record.config.remove)
            elif kind == "run":
                rec = record.run
                info = _run_info(rec)
                # A later run record (e.g. an update) only overrides what it sets.
                out.run.update({k: v for k, v in info.items() if v or k not in out.run})
                _apply_updates(config, rec.config.update, rec.config.remove)
                _apply_updates(out.summary, rec.summary.update, rec.summary.remove)
            elif kind == "files":
                for f in record.files.files:
                    if f.path not in seen_files:
                        seen_files.add(f.path)
                        out.files.append(f.path)
            elif kind == "metric":
                m = record.metric
                if m.step_metric or m.name or m.glob_name:
                    out._metric_defs.append(_MetricDef(m.name, m.glob_name, m.step_metric))
            elif kind == "exit":
                out.exit_code = record.exit.exit_code
    except _Truncated:
        out.truncated = True
    internal = config.pop("_wandb", {})
    out.wandb_internal = internal if isinstance(internal, dict) else {"value": internal}
    out.config = config
    return out


def wait_for_run(
    path: str | Path, *, timeout: float = 30.0, poll_interval: float = 0.05
) -> WandbRun:
    """Read a run once wandb-core has finished writing it.

    ``run.finish()`` returns before wandb-core closes the transaction log (see
    the module docstring), so this polls :func:`read_run` until the file holds
    the run's exit record, is not truncated and has stopped growing. Raises
    ``TimeoutError`` (describing the last state seen) after ``timeout`` seconds.
    Bad headers and corruption raise at once, as in :func:`read_run`.
    """
    deadline = time.monotonic() + timeout
    last_size = -1
    state = "no run file yet"
    while True:
        try:
            file = find_run_file(path)
            size = file.stat().st_size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncatedRunWarning)
                run = read_run(file)
        except (FileNotFoundError, IncompleteHeaderError) as exc:
            state = str(exc)
        else:
            if run.finished and not run.truncated and size == last_size:
                return run
            state = (
                f"{file}: {size} bytes, {sum(run.record_counts.values())} records, "
                f"finished={run.finished}, truncated={run.truncated}"
            )
            last_size = size
        if time.monotonic() >= deadline:
            raise TimeoutError(f"W&B run not finished writing after {timeout:g}s: {state}")
        time.sleep(poll_interval)
