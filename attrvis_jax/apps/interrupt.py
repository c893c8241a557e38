"""Ctrl-C at a safe point: a long run stops between two pieces of work, never inside one.

Python raises KeyboardInterrupt in whatever Python code runs when SIGINT arrives. During a sweep
that is often a callback of JAX or of the garbage collector (a `__del__`, a weakref finalizer): the
interrupt is then printed as "Exception ignored in ..." and lost (the sweep went on and exited 0),
or it unwinds while XLA still computes on arrays that are being freed. Inside `deferred()` the
first SIGINT only sets a flag, and the run raises KeyboardInterrupt itself at its next checkpoint:
a progress callback between two compiled chunks of steps (their results already waited for) or
between two batches. A second SIGINT raises at once, as usual.

    with interrupt.deferred() as checkpoint:
        for chunk in work:
            ...
            checkpoint()                     # raises KeyboardInterrupt after a Ctrl-C
        visualize_rows(..., progress=checkpoint.wrap(None))
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable


class Checkpoint:
    def __init__(self):
        self.requested = False

    def __call__(self, *args) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came since the last checkpoint (any arguments are
        ignored: it doubles as a progress callback)."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def wrap(self, progress: Callable | None) -> Callable:
        """A progress callback that is also a checkpoint (after `progress` has reported)."""
        if progress is None:
            return self

        def report(*args):
            progress(*args)
            self()

        return report


@contextlib.contextmanager
def deferred():
    """SIGINT sets the checkpoint's flag while the block runs (only in the main thread, and only
    where SIGINT raises KeyboardInterrupt now: an ignored SIGINT stays ignored)."""
    checkpoint = Checkpoint()
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is not signal.default_int_handler:
        yield checkpoint
        return

    def handler(signum, frame):
        if checkpoint.requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        checkpoint.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield checkpoint
        checkpoint()  # a Ctrl-C after the last checkpoint still stops the run
    finally:
        signal.signal(signal.SIGINT, previous)
