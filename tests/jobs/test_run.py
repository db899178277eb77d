"""What every job's run (contrastive.jobs.run) does with its surroundings: no secret from
the environment reaches any output, and W&B that cannot reach its server falls back to
offline."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.resume import WANDB_JOB, pretrain_process

SECRETS = {
    "WANDB_API_KEY": "f4k3" + "0123456789abcdef" * 2 + "cafe",  # 40 characters, like a real key
    "AWS_SECRET_ACCESS_KEY": "fakeAWSsecret/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "HF_TOKEN": "hf_fakeTokenThatMustNotLeak0123456789",
}


def test_no_secret_from_the_environment_reaches_any_output(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**SECRETS, "WANDB_MODE": "offline", "WANDB_DIR": str(run_dir)}
    result = pretrain_process(run_dir, "trainer.max_epochs=1", env=env, job=WANDB_JOB)
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (run_dir / "backbone.pt").is_file()
    leaks = [
        (str(p.relative_to(run_dir)), name)
        for p in files
        for name, secret in SECRETS.items()
        if secret.encode() in p.read_bytes()
    ]
    leaks += [
        ("stdout/stderr", n) for n, s in SECRETS.items() if s in result.stdout + result.stderr
    ]
    assert leaks == []


def test_wandb_that_cannot_reach_its_server_falls_back_to_offline(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens: as with no network
        "WANDB_API_KEY": "x" * 40,
        "WANDB_INIT_TIMEOUT": "5",
    }
    online = ["logger.offline=false", "trainer.max_epochs=1"]
    result = pretrain_process(run_dir, *online, env=env, job=WANDB_JOB)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B could not start online" in result.stdout + result.stderr
    assert list((run_dir / "wandb").glob("offline-run-*")) and (run_dir / "backbone.pt").is_file()
