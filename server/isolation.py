"""Run a command in a private network namespace that has only a loopback interface:
``python -m server.isolation -- COMMAND [ARGS...]``.

Why: a local multi-node Ray cluster, and the collective libraries of distributed training
(LightGBM's network, XGBoost's tracker, Torch's TCPStore), open listening sockets on every
interface (0.0.0.0), whatever Ray's node address. Inside a namespace whose only interface is
loopback, "every interface" is loopback: nothing is reachable from outside the machine.
``make test`` runs the suite this way, and ``python -m server`` runs its backend this way
when it starts the whole stack itself (server/__main__.py).

Root enters a new network namespace directly; another user enters a new user namespace
first, mapped to its own uid (so it stays itself: the embedded PostgreSQL refuses root).
The loopback interface is brought up before the command runs.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MARKER = "AIHUB_ISOLATED"  # set in the command's environment: it runs inside a namespace


def isolated() -> bool:
    """Whether this process runs inside such a namespace (set by ``enter``)."""
    return os.environ.get(MARKER) == "1"


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def enter() -> None:
    """Move this (single-threaded) process into a new network namespace with loopback up."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        _unshare(CLONE_NEWNET)
    else:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _loopback_up()
    os.environ[MARKER] = "1"


def main(argv: list[str]) -> None:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SystemExit("usage: python -m server.isolation -- COMMAND [ARGS...]")
    try:
        enter()
    except OSError as exc:
        raise SystemExit(
            f"server.isolation: cannot make a private network namespace ({exc}); needs Linux with user namespaces, or root"
        ) from None
    os.execvp(argv[0], argv)  # noqa: S606 - the command line the caller gave


if __name__ == "__main__":
    main(sys.argv[1:])
