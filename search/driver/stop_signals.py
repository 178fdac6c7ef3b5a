"""SIGTERM and SIGHUP stop a search the way Ctrl-C does.

A time limit or a preemption (SLURM, Kubernetes, systemd, `timeout`, `ray job stop`)
sends SIGTERM; a closed terminal sends SIGHUP. Either is turned into the SIGINT that
Ray Tune already handles as a graceful stop: the trials still running are stored FAIL
("interrupted"), the local Ray is shut down, the summary and the resume command are
printed, and the exit code says which signal it was (128 + its number: 143 for SIGTERM,
129 for SIGHUP). A second signal stops at once, as a second Ctrl-C does.

`ray.init` installs its own SIGTERM handler in the driver (`sys.exit` from wherever the
main thread is), so `caught()` is entered again once Ray is up (`search.driver.launcher`).

A signal sent to the driver's whole process group (`timeout`, a closed terminal, `ray
job stop`) also ends the local Ray's own processes, and Tune's graceful stop may then
wait on a Ray that is gone: if the search has not unwound `UNWIND_AFTER_S` after the
signal, the main thread is interrupted outright (KeyboardInterrupt). The searcher
keeps a trial live until its outcome is stored, so either way every trial ends stored:
COMPLETE as it finished, or FAIL "interrupted".
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

UNWIND_AFTER_S = 5.0
_received: list[int] = []
_depth = 0
_unwind: threading.Timer | None = None


def received() -> int | None:
    """The first stop signal since the outermost `caught()` began, or None."""
    return _received[0] if _received else None


def exit_code(default: int = 130) -> int:
    """128 + the stop signal received; `default` (Ctrl-C's 130) when none was."""
    signum = received()
    return 128 + signum if signum is not None else default


def _handler(signum, _frame) -> None:
    global _unwind
    _received.append(signum)
    if _unwind is None:
        _unwind = threading.Timer(UNWIND_AFTER_S, _thread.interrupt_main)
        _unwind.daemon = True
        _unwind.start()
    signal.raise_signal(signal.SIGINT)  # whatever handles Ctrl-C right now handles this too


@contextlib.contextmanager
def caught():
    """Within the block, SIGTERM and SIGHUP act as Ctrl-C (main thread only: Python
    sets signal handlers there alone; elsewhere the block runs unchanged). Blocks may
    nest: an inner one puts the handlers back in place (after `ray.init` replaced
    them), and only the outermost restores what was there before it."""
    global _depth, _unwind
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _depth == 0
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} if outermost else {}
    if outermost:
        _received.clear()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if outermost and _unwind is not None:
            _unwind.cancel()
            _unwind = None
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if not outermost:
            for signum in STOP_SIGNALS:  # the outer block's handlers, not what came in between
                signal.signal(signum, _handler)
