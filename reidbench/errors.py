"""Errors a user can fix by changing their input.

The CLI turns these into one paragraph on stderr and an exit code, never a
traceback; anything else that escapes is a bug in reidbench.
"""
from __future__ import annotations


class ReidbenchError(Exception):
    """A problem with the user's input or environment, with the fix in its message."""

    exit_code: int = 2


class UsageError(ReidbenchError):
    """Bad names, bad settings, malformed files: exit code 2."""

    exit_code = 2
