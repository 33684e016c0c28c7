"""A real Ctrl-C for tests, that arrives even when the test process ignores SIGINT.

`_thread.interrupt_main()` does nothing when SIGINT is ignored, and a shell starts background jobs
(`make test </dev/null &`) with SIGINT ignored, so a test that waits for the KeyboardInterrupt hangs.
`interrupt_main_when` installs a SIGINT handler of its own in the main thread (it raises
KeyboardInterrupt there, as Python's default one does, after putting the previous handler back),
then sends the process a real SIGINT from a thread once `condition()` holds.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable


def interrupt_main_when(condition: Callable[[], bool], timeout: float = 30.0, delay: float = 0.05,
                        poll: float = 0.01) -> threading.Thread:
    """Call from the main thread; returns the (daemon) thread that will send the SIGINT."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)      # one interrupt, then the process is as it was
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)

    def go():
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(poll)
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def default_sigint() -> None:
    """`preexec_fn` for a child that must be interruptible: a process that starts with SIGINT ignored
    (as under a background suite) keeps it ignored, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
