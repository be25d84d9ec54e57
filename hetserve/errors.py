"""The two kinds of failure a hetserve command reports without a traceback.

ConfigError: the input was refused (a config file, an argument, a plan file); the message names
the file, the field path and the value. Commands exit 2.
RuntimeFailure: the input was fine but something in the world failed (a local Ray node did not
start, a port was taken); the message says what and where to look. Commands exit 1.
"""

from __future__ import annotations

__all__ = ["ConfigError", "RuntimeFailure"]


class ConfigError(ValueError):
    """A configuration file or argument was refused; the message names file, field path and value."""


class RuntimeFailure(RuntimeError):
    """A valid request that could not be carried out (a process failed, a resource was missing)."""
