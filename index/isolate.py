"""Running work on untrusted bytes in a child process with memory and CPU limits.

Downloading and parsing pages and feeds (lxml, trafilatura, feedparser) is where a hostile
page would cost memory or CPU without bound; in a child process with `RLIMIT_AS` and
`RLIMIT_CPU` it costs at most the child, never the long-running process that started it
(the bot, `index watch --forever`). The child is a fresh interpreter (no inherited model,
index or sockets, and unlike multiprocessing's spawn it never re-imports the parent's main
script) that runs one function and streams its events back over a socket pair; the parent
reads them as they come, and kills the child when asked to stop or when it runs past its
wall-clock limit.
"""

from __future__ import annotations

import logging
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_POLL_SECONDS = 0.1
# The child's first steps: the parent's import path, then the work.
_BOOT = (
    "import sys; from multiprocessing.connection import Connection; connection = Connection(int(sys.argv[1])); "
    "sys.path[:] = connection.recv(); from index.isolate import child_main; child_main(connection)"
)


@dataclass(frozen=True)
class Limits:
    memory_mb: int  # address space of the whole child (the interpreter and libraries take ~100 MB)
    cpu_seconds: int  # CPU time for the work, after the child has started
    wall_seconds: float  # the parent kills the child after this long


class ChildFailed(Exception):
    """The child did not finish its work; the message is one line for the operator."""


def run_isolated(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    limits: Limits,
    *,
    on_event: Callable[[Any], None] | None = None,
    cancel: threading.Event | None = None,
) -> Any:
    """`target(*args, emit)` in a limited child process (`target` importable by name, `args`
    picklable); `emit(event)` there calls `on_event(event)` here. Returns what `target`
    returned; raises `ChildFailed` when the child broke a limit, crashed, raised, or was
    cancelled (it is then killed)."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-c", _BOOT, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    connection = Connection(ours.detach())
    started = time.monotonic()
    try:
        connection.send(list(sys.path))
        connection.send((target, args, limits))
        while True:
            if cancel is not None and cancel.is_set():
                raise ChildFailed("cancelled")
            if time.monotonic() - started > limits.wall_seconds:
                raise ChildFailed(f"stopped: the fetching process ran longer than {limits.wall_seconds:g}s")
            if not connection.poll(_POLL_SECONDS):
                continue
            try:
                kind, value = connection.recv()
            except (EOFError, OSError):
                raise ChildFailed(_death(_exit_status(child), limits)) from None
            if kind == "event":
                if on_event is not None:
                    on_event(value)
            elif kind == "done":
                return value
            elif kind == "memory":
                raise ChildFailed(_memory_message(limits))
            else:
                log.error("the isolated process failed:\n%s", value)
                raise ChildFailed(f"the fetching process failed: {value.strip().splitlines()[-1]}")
    except (BrokenPipeError, ConnectionResetError):
        raise ChildFailed(_death(_exit_status(child), limits)) from None
    finally:
        connection.close()
        if child.poll() is None:
            child.kill()
        child.wait()


def _exit_status(child: subprocess.Popen[bytes]) -> int | None:
    try:
        return child.wait(5)
    except subprocess.TimeoutExpired:
        return None


def child_main(connection: Connection) -> None:
    """In the child: set the limits, run the work, report how it ended."""
    target, args, limits = connection.recv()
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * _MIB, limits.memory_mb * _MIB))

    def emit(event: Any) -> None:
        connection.send(("event", event))

    try:
        result = target(*args, emit)
    except MemoryError:
        connection.send(("memory", None))
    except BaseException:
        connection.send(("error", traceback.format_exc(limit=20)))
    else:
        connection.send(("done", result))
    finally:
        connection.close()


def _death(exitcode: int | None, limits: Limits) -> str:
    if exitcode == -signal.SIGXCPU:
        return f"stopped: reading it used more than {limits.cpu_seconds} CPU seconds ([ingest] child_cpu_seconds)"
    if exitcode == -signal.SIGKILL:  # the hard CPU limit, or the kernel's out-of-memory killer
        return "stopped: the fetching process was killed (CPU or memory: [ingest] child_cpu_seconds, child_memory_mb)"
    if exitcode is not None and exitcode < 0:
        return f"stopped: the fetching process died ({signal.Signals(-exitcode).name})"
    return f"stopped: the fetching process exited unexpectedly (status {exitcode})"


def _memory_message(limits: Limits) -> str:
    return f"stopped: reading it needed more than {limits.memory_mb} MB ([ingest] child_memory_mb)"
