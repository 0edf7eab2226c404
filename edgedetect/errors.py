"""Errors a user can act on: printed as one line, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, key, value). Exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class ModelError(UserError):
    """A model file that cannot be used: missing, corrupt, or an unsupported signature."""


class ConfigError(UserError):
    """A config file or value that fails validation."""


class SourceError(UserError):
    """A video source that cannot be opened."""
