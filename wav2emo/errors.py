"""Errors a person can act on, kept apart from bugs.

A :class:`UserError` says what input, config value or stored file is wrong and what was expected. The
command-line entry points print it as one line and exit with status 2 (:func:`wav2emo.cli.user_errors`);
anything else is a bug in wav2emo and keeps its traceback. Library callers catch these like the built-in
error each one also is (``ValueError``, ``RuntimeError``, ...).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a bad config value or damaged data; the message names it and what was expected."""


class ConfigError(UserError, ValueError):
    """A config value that cannot be used as given (e.g. ``fold=abc``, a checkpoint of another fold)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (a checkpoint, a run directory) does not exist."""
