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


class DisplayError(UserError):
    """A monitor that cannot be drawn on: no device, no connected screen, another process owns it."""


LONG_WORD = 200  # characters of one value an error line shows in full (a catalogue URL fits)


def shorten(text: str, limit: int = LONG_WORD) -> str:
    """`text` on one line, with every run of non-blank characters over `limit` cut in the
    middle, so that a pasted blob or a path of 4000 characters still gives a readable error."""
    import re

    def cut(m: re.Match[str]) -> str:
        w = m.group(0)
        w, tail = (w[:-1], w[-1]) if w[-1] in ":,;" else (w, "")
        return f"{w[:limit * 2 // 3]}...{w[-limit // 4:]} ({len(w)} characters){tail}"

    return re.sub(r"\S{%d,}" % (limit + 1), cut, " ".join(text.split()))
