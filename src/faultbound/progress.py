"""Progress messages of long computations.

The library never prints: a function that can take more than a few seconds takes an optional
``progress`` callback and calls it with a short message (``"beam search: 3 of 5 rounds"``) at its
meaningful steps. The CLI shows the latest message on stderr (a rich status line), so ``--json``
output on stdout stays clean. Calling the callback costs nothing else: results are the same with
and without it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "prefixed", "say"]

#: A progress callback: receives a one-line message saying what the computation is doing now.
Progress = Callable[[str], None]


def prefixed(progress: Progress, prefix: str) -> Progress:
    """A callback passing ``prefix + message`` to ``progress`` (an inner step of a stage)."""
    return lambda message: progress(prefix + message)


def say(progress: Progress | None, message: str) -> None:
    """Pass ``message`` to ``progress`` (nothing when it is None)."""
    if progress is not None:
        progress(message)
