"""SIGTERM handled like Ctrl-C, so that `kill` or a scheduler's stop leaves a run interrupted, not "running" forever."""
from __future__ import annotations

import signal
import threading
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so every place that records an interruption records this one too."""

    exit_code = 143


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (a no-op elsewhere: only it may set handlers).

    SIGINT is left as the shell set it: a job started in the background ignores
    Ctrl-C on purpose, and Python then leaves it ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)


def exit_code(interruption: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    return getattr(interruption, "exit_code", 130)
