"""One writer per run directory (contrastive.jobs.lock): each rule on a lock left by a live
process, a dead one, another host, a restart of the same SLURM job or torchrun run, a
broken file, a pid reused; release only by its owner; the lock in :class:`Run`; and a job
refused by a live holder."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from contrastive.errors import ConfigError, Preempted, RunDirectoryInUse
from contrastive.jobs import lock
from contrastive.jobs.run import Run
from tests.helpers.resume import pretrain_process, signal_at

# No job ids from the machine the tests run on.
JOB_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_PROCID",
    "TORCHELASTIC_RUN_ID",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "JSM_NAMESPACE_RANK",
)


@pytest.fixture(autouse=True)
def _no_job_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process to hold locks (killed at the end, whatever happens)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait(timeout=10)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)  # reaped: no zombie answers for it
    return process.pid


def write_lock(run_dir: Path, **fields: object) -> lock.Holder:
    """A lock in ``run_dir`` as process ``pid`` (this one by default) would have written it."""
    if "pid" in fields and "process_start" not in fields:
        fields["process_start"] = lock.process_start(fields["pid"])  # type: ignore[arg-type]
    holder = dataclasses.replace(lock.Holder.this_process({}), **fields)  # type: ignore[arg-type]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / lock.LOCK_NAME).write_text(json.dumps(dataclasses.asdict(holder)))
    return holder


def on_disk(run_dir: Path) -> lock.Holder:
    return lock.Holder.parse((run_dir / lock.LOCK_NAME).read_bytes())


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path: Path) -> None:
    env = {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "80"}
    held = lock.acquire(tmp_path / "run", env)
    record = json.loads((tmp_path / "run" / "run.lock").read_text())
    assert record["pid"] == held.holder.pid and record["host"] == held.holder.host
    assert record["slurm_job"] == "77_3" and record["started"] and record["command"]
    held.release()
    assert not (tmp_path / "run" / "run.lock").exists()


def test_a_live_holder_on_this_host_is_refused_by_name(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    holder = write_lock(tmp_path, pid=sleeper.pid)
    before = (tmp_path / "run.lock").read_bytes()
    with pytest.raises(RunDirectoryInUse) as refused:
        lock.acquire(tmp_path, {})
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError)  # the CLI's exit 2, no traceback
    assert f"run directory {tmp_path} is in use by another job" in message
    assert f"pid {sleeper.pid} on host {holder.host}" in message
    assert f"since {holder.started}" in message and "its process is alive" in message
    assert "hydra.run.dir" in message and f"delete {tmp_path / 'run.lock'}" in message
    assert (tmp_path / "run.lock").read_bytes() == before


def test_a_dead_holder_on_this_host_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    with caplog.at_level(logging.INFO, logger="contrastive.jobs.lock"):
        held = lock.acquire(tmp_path, {})
    assert on_disk(tmp_path) == held.holder
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"stale lock {tmp_path / 'run.lock'} from pid {pid}" in warning.getMessage()
    assert "its process is gone" in warning.getMessage()


def test_a_holder_on_another_host_is_refused(tmp_path: Path) -> None:
    write_lock(tmp_path, pid=dead_pid(), host="node-elsewhere")  # dead here; there, unknown
    with pytest.raises(RunDirectoryInUse, match=r"on host node-elsewhere, .*another host"):
        lock.acquire(tmp_path, {})


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ({"slurm_job": "4242"}, {"SLURM_JOB_ID": "4242"}),
        (
            {"slurm_job": "4200_7"},
            {"SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "7", "SLURM_JOB_ID": "4209"},
        ),
        ({"torchelastic_run_id": "abc"}, {"TORCHELASTIC_RUN_ID": "abc"}),
    ],
    ids=["slurm-requeue", "slurm-array-requeue", "torchrun-restart"],
)
def test_a_restart_of_the_same_job_on_another_host_takes_over(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    theirs: dict[str, str],
    ours: dict[str, str],
) -> None:
    write_lock(tmp_path, host="node-before", **theirs)
    with caplog.at_level(logging.INFO, logger="contrastive.jobs.lock"):
        held = lock.acquire(tmp_path, ours)
    assert on_disk(tmp_path) == held.holder
    assert "a restart of the same job" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ({"slurm_job": "4200_7"}, {"SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "8"}),
        ({"slurm_job": "4242"}, {"SLURM_JOB_ID": "4243"}),
        ({"torchelastic_run_id": None}, {"TORCHELASTIC_RUN_ID": "none"}),  # torchrun's default
        ({"torchelastic_run_id": "abc"}, {"TORCHELASTIC_RUN_ID": "abd"}),
    ],
    ids=["another-array-task", "another-slurm-job", "default-rdzv-id", "another-torchrun"],
)
def test_negative_control_another_job_on_another_host_is_refused(
    tmp_path: Path, theirs: dict[str, str], ours: dict[str, str]
) -> None:
    write_lock(tmp_path, host="node-before", **theirs)
    with pytest.raises(RunDirectoryInUse):
        lock.acquire(tmp_path, ours)


def test_the_same_slurm_job_alive_on_this_host_is_refused(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A requeued job's old process has ended: a live one is a second run in one allocation."""
    write_lock(tmp_path, pid=sleeper.pid, slurm_job="4242")
    with pytest.raises(RunDirectoryInUse, match="SLURM job 4242"):
        lock.acquire(tmp_path, {"SLURM_JOB_ID": "4242"})


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"pid": "12"}'])
def test_an_unreadable_lock_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    (tmp_path / "run.lock").write_bytes(content)
    held = lock.acquire(tmp_path, {})
    assert on_disk(tmp_path) == held.holder
    assert "unreadable" in caplog.text and "stale lock" in caplog.text


def test_a_lock_with_this_process_pid_is_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_lock(tmp_path)  # this pid, this host, another token: a run that never released it
    held = lock.acquire(tmp_path, {})
    assert on_disk(tmp_path) == held.holder and "this process's" in caplog.text


@pytest.mark.skipif(lock.process_start(1) is None, reason="needs /proc")
def test_a_pid_reused_by_another_process_is_stale(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    started = lock.process_start(sleeper.pid)
    assert started is not None
    write_lock(tmp_path, pid=sleeper.pid, process_start=started - 1)
    held = lock.acquire(tmp_path, {})
    assert on_disk(tmp_path) == held.holder


def test_release_leaves_a_lock_another_process_took(tmp_path: Path) -> None:
    held = lock.acquire(tmp_path, {})
    theirs = write_lock(tmp_path, host="node-elsewhere")  # taken over meanwhile
    held.release()
    assert on_disk(tmp_path) == theirs


def _contend(
    run_dir: str, start: multiprocessing.synchronize.Barrier, won: object, delay: float
) -> None:
    check = lock.alive

    def slow_alive(pid: int, started: int | None) -> bool:
        time.sleep(delay)
        return check(pid, started)

    lock.alive = slow_alive  # type: ignore[assignment]  # this process only (forked)
    start.wait(timeout=30)
    try:
        lock.acquire(run_dir, {})
        with won.get_lock():  # type: ignore[attr-defined]
            won.value += 1  # type: ignore[attr-defined]
    except RunDirectoryInUse:
        pass
    start.wait(timeout=30)  # the winner stays alive until every contender has judged


def test_one_of_several_jobs_racing_for_a_stale_lock_wins(tmp_path: Path) -> None:
    """Every contender reads the stale lock at once, and they judge it one after another
    (slow liveness checks, 0.2 s apart): a take-over that removed whatever lock it found
    would remove the first winner's lock and let the next win too."""
    write_lock(tmp_path, pid=dead_pid())
    context = multiprocessing.get_context("fork")
    contenders = 4
    start = context.Barrier(contenders)
    won = context.Value("i", 0)
    processes = [
        context.Process(target=_contend, args=(str(tmp_path), start, won, 0.2 * i))
        for i in range(contenders)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * contenders
    assert won.value == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "holds"),
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),  # torchrun
        ({"LOCAL_RANK": "1"}, False),  # a child of Lightning's DDP launcher
        ({"SLURM_PROCID": "2"}, False),
        ({"NODE_RANK": "1"}, False),  # Lightning's launcher on a second node
    ],
)
def test_only_the_global_rank_zero_locks_in_a_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sleeper: subprocess.Popen[bytes],
    env: dict[str, str],
    holds: bool,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = OmegaConf.create({"output_dir": str(tmp_path)})
    with Run(cfg):
        assert (tmp_path / "run.lock").exists() is holds
    assert not (tmp_path / "run.lock").exists()
    write_lock(tmp_path, pid=sleeper.pid)  # rank zero holds it: the other ranks go on
    if holds:
        with pytest.raises(RunDirectoryInUse), Run(cfg):
            pass
    else:
        with Run(cfg):
            pass
    assert on_disk(tmp_path).pid == sleeper.pid


@pytest.mark.parametrize("error", [RuntimeError("boom"), Preempted(signal.SIGTERM, 3, None, None)])
def test_a_run_left_by_an_error_or_a_signal_releases_its_lock(
    tmp_path: Path, error: Exception
) -> None:
    with pytest.raises(type(error)), Run(OmegaConf.create({"output_dir": str(tmp_path)})):
        assert (tmp_path / "run.lock").exists()
        raise error
    assert not (tmp_path / "run.lock").exists()


SHORT = ["trainer.max_steps=3", "trainer.max_epochs=1"]


def test_a_pretraining_job_refuses_a_directory_a_live_job_holds(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    run_dir = tmp_path / "run"
    holder = write_lock(run_dir, pid=sleeper.pid, slurm_job="999", command="pretrain.py")
    before = (run_dir / "run.lock").read_bytes()
    result = pretrain_process(run_dir, *SHORT)
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: run directory {run_dir} is in use by another job")
    assert f"pid {sleeper.pid} on host {holder.host} (SLURM job 999)" in error
    assert "Traceback" not in result.stderr
    assert (run_dir / "run.lock").read_bytes() == before  # the holder's lock, untouched
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    # Hydra's own files only: no checkpoint, backbone.pt or metrics.json
    assert written == [
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "pretrain.log",
        "run.lock",
    ]


@pytest.mark.slow
def test_a_sigkilled_jobs_lock_is_taken_over_by_the_rerun_which_resumes(tmp_path: Path) -> None:
    every_2 = [
        "callbacks.last_checkpoint.train_time_interval=null",
        "callbacks.last_checkpoint.every_n_train_steps=2",
    ]
    run_dir = tmp_path / "run"
    killed = pretrain_process(run_dir, *SHORT[1:], *every_2, *signal_at(5, "SIGKILL"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    stale = on_disk(run_dir)  # left behind by the killed job
    rerun = pretrain_process(run_dir, *SHORT[1:], *every_2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    assert f"Taking over the stale lock {run_dir / 'run.lock'} from pid {stale.pid}" in output
    assert "its process is gone" in output
    assert "Restoring states from the checkpoint" in output  # it resumed, not restarted
    assert (run_dir / "backbone.pt").is_file()
    assert not (run_dir / "run.lock").exists()  # a finished run leaves no lock
