"""What a server starts ends with it: helper processes die with their parent even when it is
killed with -9 (Linux's parent-death signal), ports are checked before anything listens on
them, and a process that ends takes its descendants with it."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import shutil
import signal
import socket
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


class PortInUse(RuntimeError):
    """A port this server should listen on is taken (most often: another server runs)."""


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the thread that
    started it ends (start children from the main thread, which lives as long as the
    process). Kept across exec, so it holds for Envoy and for ``python -m server.isolation``."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


SETPRIV = shutil.which("setpriv")  # util-linux: sets the parent-death signal, then execs


def dying_with_parent(command: list[str], sig: int = signal.SIGTERM) -> tuple[list[str], Callable[[], None] | None]:
    """``command`` and the ``preexec_fn`` that make a child get ``sig`` when the thread that
    started it ends (start children from the main thread, which lives as long as the process).

    Where util-linux's ``setpriv`` is found, the command runs through it
    (``setpriv --pdeathsig TERM -- command``: it sets the signal, then execs, and the signal
    is kept across exec) and there is no ``preexec_fn``: so Python may start the child with
    vfork, and no fork handler of a library with threads (gRPC's) runs in between. A
    ``preexec_fn`` forces a plain fork; gRPC's fork handlers then aborted Envoy's child
    once in a full-suite run. Without setpriv: :func:`die_with_parent`, as before."""
    if SETPRIV:
        return [SETPRIV, "--pdeathsig", signal.Signals(sig).name.removeprefix("SIG"), "--", *command], None
    return command, die_with_parent(sig)


def ensure_free(host: str, port: int, what: str) -> None:
    """PortInUse, naming ``what`` (the setting), unless ``host:port`` can be bound now. No
    SO_REUSEPORT here: a port another process listens on is taken, whatever it set."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as every server sets it: connections of a stopped server that linger in
        # TIME_WAIT do not hold the port, a listening socket does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{what}: {host}:{port} is already in use (is another server running?)") from None
            raise


def end_descendants(timeout: float = 5.0) -> int:
    """Terminate every process this one started, and theirs (then kill what is left after
    ``timeout``); returns how many there were."""
    import psutil

    me = psutil.Process()
    children = me.children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return len(children)


def tune_gc() -> None:
    """After start-up: move what exists now out of the collector's sight (gc.freeze) and
    collect the young generation less often. A server allocates many short-lived objects
    per call; collections of everything it loaded at start were its longest pauses."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
