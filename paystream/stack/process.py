"""Background service processes tracked by pid files: start detached, stop politely, then firmly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from paystream.errors import StackError

LOG_TAIL_LINES = 20


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is alive, else None (and a stale file is removed)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    if _is_zombie(pid):
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state == "Z"


def start_detached(command: Sequence[str], log_file: Path, pid_file: Path, env: dict[str, str] | None = None) -> int:
    """Start `command` in its own session, output appended to `log_file`; returns the pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def stop_process(pid_file: Path, grace_s: float = 30.0, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Send `sig`, wait up to `grace_s`, then SIGKILL; True if a process was stopped."""
    pid = read_pid(pid_file)
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def log_tail(log_file: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {log_file})"
    return "\n".join(content[-lines:])


def run_checked(command: Sequence[str], what: str, log_file: Path | None = None, **kwargs: object) -> str:
    """Run a set-up command; on failure raise StackError with its output's tail, not a traceback."""
    try:
        result = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except FileNotFoundError as error:
        raise StackError(f"{what}: {command[0]} is not installed ({error})") from error
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as log:
            log.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-LOG_TAIL_LINES:]
        raise StackError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(output))
    return str(result.stdout)
