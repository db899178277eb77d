"""Every job command the README shows composes, with its overrides, as its entry point
would compose it: a renamed config path breaks this test before it breaks a user."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from contrastive.cli import compose_job

README = Path(__file__).resolve().parents[1] / "README.md"
CONFIGS = {"pretrain": "pretrain", "linear_probe": "linear_probe", "knn_eval": "knn"}
CONFIGS["distill"] = "distill"
COMMAND = re.compile(r"scripts/(pretrain|linear_probe|knn_eval|distill)\.py\b(.*)$")


def readme_commands() -> list[tuple[str, tuple[str, ...]]]:
    """``(config name, overrides)`` of each job command in the README's code blocks."""
    text = README.read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            match = COMMAND.search(line.split("#", 1)[0])
            if match is None:
                continue
            rest = re.sub(r"<[^>]*>", "x", match.group(2))  # placeholders: any value
            rest = re.sub(r"\$\w+", "x", rest)
            overrides = [t for t in shlex.split(rest) if not t.startswith("-") and t != "..."]
            commands.append((CONFIGS[match.group(1)], tuple(overrides)))
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_every_job() -> None:
    assert {name for name, _ in COMMANDS} == set(CONFIGS.values())
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize(
    ("config_name", "overrides"), COMMANDS, ids=[" ".join((n, *o)) for n, o in COMMANDS]
)
def test_readme_command_composes(
    tmp_path: Path, config_name: str, overrides: tuple[str, ...]
) -> None:
    cfg = compose_job(tmp_path, config_name, *overrides)
    for override in overrides:
        key, _, value = override.partition("=")
        if "." not in key or "/" in key or key.startswith("hydra"):
            continue  # a group choice, or Hydra's own node
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert str(node).lower() == value.lower() or value == "x"


@pytest.mark.parametrize(
    "stale",
    ["model.compile=true", "optim.lr_scaling=linear", "distill.mode=representation"],
)
def test_a_path_that_moved_does_not_compose(tmp_path: Path, stale: str) -> None:
    """The negative control: composition refuses a key that is no longer there."""
    config_name = "distill" if stale.startswith("distill") else "pretrain"
    extra = ("teacher=x",) if config_name == "distill" else ()
    with pytest.raises(ConfigCompositionException):
        compose_job(tmp_path, config_name, *extra, stale)
