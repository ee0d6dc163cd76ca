"""A PostgreSQL server from Debian's packages, initdb'd into .stack/postgres/data.

PostgreSQL refuses to run as root; when the stack runs as root the server
runs as a system user `paystream` created for it. Loopback only, trust auth,
a non-default port; fsync stays on (this is a payment system).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
from pathlib import Path

import asyncpg

from paystream.errors import StackError
from paystream.settings import STACK_POSTGRES_PORT, Settings
from paystream.stack.process import log_tail, run_checked

SERVICE_USER = "paystream"
DATABASE = "paystream"
READY_TIMEOUT_S = 60.0
SERVER_OPTIONS = {
    "listen_addresses": "'127.0.0.1'",
    "port": str(STACK_POSTGRES_PORT),
    "max_connections": "200",
    "shared_buffers": "256MB",
    "fsync": "on",
    "log_min_messages": "warning",
    "log_destination": "'stderr'",
}


def pg_dir(settings: Settings) -> Path:
    return settings.stack_dir / "postgres"


def data_dir(settings: Settings) -> Path:
    return pg_dir(settings) / "data"


def log_file(settings: Settings) -> Path:
    return pg_dir(settings) / "server.log"


def find_bindir() -> Path | None:
    """The newest installed server binaries (Debian keeps them under /usr/lib/postgresql/<v>/bin)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def ensure_installed() -> Path:
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0:
        raise StackError(
            "PostgreSQL server binaries are missing. Install them with:"
            " sudo apt-get install -y postgresql  (or point PAYSTREAM_DATABASE_URL at a server you run)"
        )
    print("installing PostgreSQL from Debian's packages (apt-get install postgresql) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_checked(["apt-get", "update", "-q"], "apt-get update", env=env)
    run_checked(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
        "apt-get install",
        env=env,
    )
    bindir = find_bindir()
    if bindir is None:
        raise StackError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    return bindir


def _service_user() -> str | None:
    """The user the server runs as: None means the current (non-root) user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        run_checked(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            f"creating the system user {SERVICE_USER}",
        )
    return SERVICE_USER


def _as_service_user(command: list[str]) -> list[str]:
    user = _service_user()
    return ["runuser", "-u", user, "--", *command] if user else command


def _chown_tree(path: Path) -> None:
    user = _service_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for folder, _, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


def initdb(settings: Settings, bindir: Path) -> None:
    data = data_dir(settings)
    if (data / "PG_VERSION").exists():
        return
    home = pg_dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    # The service user must be able to reach the folder through its parents.
    for parent in [home, *home.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    _chown_tree(home)
    print(f"initdb into {data} ...", flush=True)
    run_checked(
        _as_service_user(
            [str(bindir / "initdb"), "-D", str(data), "--auth=trust", f"--username={SERVICE_USER}",
             "--encoding=UTF8", "--locale=C"]
        ),
        "initdb",
        log_file=home / "initdb.log",
    )  # fmt: skip
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# paystream local stack\n")
        for key, value in SERVER_OPTIONS.items():
            conf.write(f"{key} = {value}\n")
        conf.write(f"unix_socket_directories = '{home}'\n")


def running(settings: Settings) -> int | None:
    pid_path = data_dir(settings) / "postmaster.pid"
    try:
        pid = int(pid_path.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    except PermissionError:
        return pid
    return pid


async def start(settings: Settings) -> int:
    bindir = ensure_installed()
    initdb(settings, bindir)
    if running(settings) is None:
        log = log_file(settings)
        log.touch()
        _chown_tree(pg_dir(settings))
        try:
            run_checked(
                _as_service_user([str(bindir / "pg_ctl"), "-D", str(data_dir(settings)), "-l", str(log), "-w",
                                  "-t", "60", "start"]),
                "starting PostgreSQL",
            )  # fmt: skip
        except StackError as error:
            raise StackError(f"{error}\nserver log ends with:\n{log_tail(log)}") from None
    await wait_ready(settings)
    await _ensure_database(settings)
    pid = running(settings)
    assert pid is not None
    return pid


async def wait_ready(settings: Settings) -> None:
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    last_error: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            connection = await asyncpg.connect(_admin_url(), timeout=3)
            await connection.close()
            return
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            last_error = error
            await asyncio.sleep(0.3)
    raise StackError(
        f"PostgreSQL did not accept connections within {READY_TIMEOUT_S:.0f} s ({last_error});"
        f" server log ends with:\n{log_tail(log_file(settings))}"
    )


def _admin_url() -> str:
    return f"postgresql://{SERVICE_USER}@127.0.0.1:{STACK_POSTGRES_PORT}/postgres"


async def _ensure_database(settings: Settings) -> None:
    connection = await asyncpg.connect(_admin_url(), timeout=10)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f'CREATE DATABASE "{DATABASE}" OWNER "{SERVICE_USER}"')
    finally:
        await connection.close()


def stop(settings: Settings, mode: str = "fast") -> bool:
    if running(settings) is None:
        return False
    bindir = find_bindir()
    if bindir is None:
        raise StackError("PostgreSQL is running but its pg_ctl cannot be found")
    run_checked(
        _as_service_user([str(bindir / "pg_ctl"), "-D", str(data_dir(settings)), "-m", mode, "-w", "-t", "60", "stop"]),
        "stopping PostgreSQL",
    )
    return True


async def version() -> str:
    connection = await asyncpg.connect(_admin_url(), timeout=5)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()
