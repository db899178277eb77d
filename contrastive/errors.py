"""Errors meant for the person running a job: the CLI prints their message, no traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that composes but cannot work; the message names the key(s) to fix."""
