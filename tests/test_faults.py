"""The one-line messages of contrastive.faults, on the error texts torch raises (the real
faults: tests/jobs/test_distributed_faults.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from contrastive import distributed, faults

GLOO = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
    "[127.0.0.1]:28804: Connection reset by peer. This is typically caused by a remote "
    "worker hanging or bugs in the application."
)


@pytest.fixture
def two_ranks(monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """A recorded group of two ranks on this host: this process and a live child."""
    import os

    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    monkeypatch.setattr(
        distributed,
        "_PEERS",
        [distributed.Peer(0, host, os.getpid()), distributed.Peer(1, host, peer.pid)],
    )
    yield peer
    peer.kill()
    peer.wait()


def kill_leaving_a_zombie(peer: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``peer`` and wait until it has exited, without reaping it (``WNOWAIT``): a
    kill is not instant, and a check right after it can still find the process running."""
    import os

    peer.kill()
    os.waitid(os.P_PID, peer.pid, os.WEXITED | os.WNOWAIT)


def test_a_collective_error_names_the_rank_whose_process_is_gone(
    two_ranks: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    kill_leaving_a_zombie(two_ranks)  # not reaped: a zombie, which counts as gone
    message = faults.describe(RuntimeError(GLOO), "/runs/r1")
    assert message is not None
    assert message.startswith(f"rank 0 stopped: lost rank 1 (pid {two_ranks.pid} on ")
    assert "(Read error [127.0.0.1]:28804: Connection reset by peer)" in message
    assert "This is typically" not in message  # gloo's advice is cut
    assert "rerun the same command" in message and "/runs/r1/checkpoints" in message


def test_under_torchrun_the_message_says_the_group_restarts(
    two_ranks: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    kill_leaving_a_zombie(two_ranks)
    message = faults.describe(RuntimeError(GLOO))
    assert message is not None and "Under torchrun, the group restarts" in message


def test_a_live_peer_is_not_blamed(two_ranks: subprocess.Popen[bytes]) -> None:
    message = faults.describe(RuntimeError(GLOO))
    assert message is not None and "every rank's process is alive" in message
    assert "lost rank 1" not in message


def test_a_peer_on_another_host_is_named_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    here = distributed.Peer(0, socket.gethostname(), os.getpid())
    monkeypatch.setattr(distributed, "_PEERS", [here, distributed.Peer(1, "node9", 4242)])
    message = faults.describe(RuntimeError(GLOO))
    assert message is not None and "one of rank 1 (pid 4242 on node9), on other hosts" in message


def test_negative_control_errors_that_are_not_these_faults_pass_through(
    two_ranks: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert faults.describe(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert faults.describe(ValueError(GLOO)) is None
    monkeypatch.setattr(distributed, "_PEERS", [])  # one process: no group to lose
    assert faults.describe(RuntimeError(GLOO)) is None


@pytest.mark.parametrize(
    ("text", "how"),
    [
        ("DataLoader worker (pid 4711) is killed by signal: Killed. ", "killed by signal Killed"),
        ("DataLoader worker (pid(s) 4711, 4712) exited unexpectedly", "exited unexpectedly"),
    ],
)
def test_a_killed_loader_worker_names_it_and_the_memory(text: str, how: str) -> None:
    message = faults.describe(RuntimeError(text), "/runs/r1", num_workers=8)
    assert message is not None
    assert "DataLoader worker (pid 4711" in message and how in message
    assert "out-of-memory killer" in message and "available now" in message
    assert "data.num_workers (now 8)" in message and "rerun the same command" in message
