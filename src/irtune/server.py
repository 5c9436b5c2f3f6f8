"""A team's MLflow tracking server: PostgreSQL store, proxied artifacts, basic auth.

Usage: ``python -m irtune.server start|stop|status [--dir DIR] ...`` (``make server``,
``make server-stop``, ``make server-status``).

``start`` keeps everything under one folder (``.irtune/server/`` by default, gitignored):

- ``postgres/``: a PostgreSQL cluster of its own, made with Debian's ``initdb`` on first
  start and run with ``pg_ctl``, listening on 127.0.0.1 only (no Unix socket), password
  (SCRAM) authentication. It holds two databases: ``mlflow`` (runs, registry) and
  ``mlflow_auth`` (MLflow's users and permissions).
- ``pgpass`` (mode 0600): the cluster's generated password, handed to MLflow through libpq's
  ``PGPASSFILE``, so no database URI carries it (``ps`` shows every command line).
- ``auth.ini`` (mode 0600): MLflow's basic-auth config (``MLFLOW_AUTH_CONFIG_PATH``): the
  auth database and the admin's user name. The admin's password is never written: MLflow
  reads it from ``MLFLOW_AUTH_ADMIN_PASSWORD`` when it creates the admin on first start.
- ``secret_key`` (mode 0600): the Flask secret behind the auth app's CSRF protection.
- ``artifacts/``: the artifacts, proxied by the server, unless ``--artifacts-destination``
  names another MLflow URI (``s3://...``, another folder).
- ``mlflow.log``, ``server.json`` (what is running where: pid, ports).

As root, PostgreSQL (which refuses to run as root) runs as the ``postgres`` user Debian's
package creates; the MLflow server runs as the caller.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from irtune.errors import IrtuneError
from irtune.pipeline import repo_root
from irtune.workspace import pid_alive

log = logging.getLogger(__name__)

#: PostgreSQL's role and the two databases the server uses.
PG_ROLE = "irtune"
TRACKING_DB = "mlflow"
AUTH_DB = "mlflow_auth"
#: MLflow's password rule (``mlflow.utils.validation._validate_password``).
MIN_PASSWORD_LENGTH = 12
#: The admin password old MLflow releases shipped in basic_auth.ini; MLflow refuses it.
LEGACY_DEFAULT_PASSWORD = "password1234"
#: MLflow's permissions, from none to all (``mlflow.server.auth.permissions``).
PERMISSIONS = ("NO_PERMISSIONS", "READ", "EDIT", "MANAGE")
#: Seconds MLflow remembers a verified login (0: hash the password on every request).
AUTH_CACHE_TTL_S = 60
#: The OS user PostgreSQL runs as when the caller is root.
PG_OS_USER = "postgres"


class ServerError(IrtuneError):
    """The server cannot be started or stopped; the message says why and what to do."""


@dataclass
class Settings:
    """How to run the server.

    Attributes:
        dir: The server's folder (cluster, generated config, log, default artifacts).
        host: The address MLflow binds to; 127.0.0.1 unless a team asks otherwise.
        port: MLflow's port.
        pg_port: PostgreSQL's port (always on 127.0.0.1).
        artifacts_destination: Where the proxied artifacts go (any MLflow artifact URI);
            empty: ``<dir>/artifacts``.
        workers: MLflow's worker processes.
        extra_args: More ``mlflow server`` options (``--allowed-hosts``...).
        pg_settings: More PostgreSQL settings, ``name=value`` (``fsync=off`` for a
            throwaway test server).
        default_permission: What every logged-in user may do with experiments they did not
            create (their own they manage): ``EDIT`` (log runs to them: a team's shared
            experiments, a sweep's), ``READ``, ``MANAGE`` or ``NO_PERMISSIONS``.
    """

    dir: Path
    host: str = "127.0.0.1"
    port: int = 5001
    pg_port: int = 5433
    artifacts_destination: str = ""
    workers: int = 2
    extra_args: tuple[str, ...] = ()
    pg_settings: tuple[str, ...] = ()
    default_permission: str = "EDIT"

    @property
    def url(self) -> str:
        """The URL clients use (``tracking.uri``)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def artifacts(self) -> str:
        """The artifacts destination, defaulted."""
        return self.artifacts_destination or str((self.dir / "artifacts").resolve())

    def store_uri(self, database: str) -> str:
        """A SQLAlchemy URI of one of the cluster's databases; the password comes from
        ``PGPASSFILE``, never the URI."""
        return f"postgresql+psycopg2://{PG_ROLE}@127.0.0.1:{self.pg_port}/{database}"


# --- PostgreSQL ----------------------------------------------------------------------------


def pg_bindir() -> Path:
    """The folder of PostgreSQL's programs: that of ``initdb`` on the PATH (links
    followed), else the newest of Debian's ``/usr/lib/postgresql/<version>/bin``.

    Raises:
        ServerError: If there is no PostgreSQL.
    """
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    raise ServerError(
        "PostgreSQL is not installed (no initdb on the PATH nor in /usr/lib/postgresql/*/bin): "
        "`make install` installs Debian's postgresql as root, or `apt-get install postgresql`"
    )


def _pg_user() -> pwd.struct_passwd | None:
    """The OS user PostgreSQL must run as: None (the caller) unless the caller is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise ServerError(
            f"PostgreSQL refuses to run as root, and there is no '{PG_OS_USER}' user to run it "
            "as: run `make server` as an ordinary user, or install Debian's postgresql package "
            "(which creates that user)"
        ) from None


def _run_pg(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one of PostgreSQL's programs (as the ``postgres`` user when root).

    Raises:
        ServerError: If it fails; the message holds its output.
    """
    user = _pg_user()
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    cmd = [str(pg_bindir() / program), *args]
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False, **as_user
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise ServerError(f"{program} failed (exit {proc.returncode}): {output}")
    return proc


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (0600) from the first byte."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _pg_password(settings: Settings) -> str:
    return (settings.dir / "pgpass").read_text(encoding="utf-8").strip().rsplit(":", 1)[1]


def _write_pgpass(settings: Settings, password: str) -> None:
    # libpq's format: host:port:database:user:password; it ignores a file others can read.
    _write_private(
        settings.dir / "pgpass", f"127.0.0.1:{settings.pg_port}:*:{PG_ROLE}:{password}\n"
    )


def _init_cluster(settings: Settings) -> None:
    """``initdb`` a new cluster under ``<dir>/postgres/data``, owned by whoever runs it."""
    pg_dir = settings.dir / "postgres"
    pg_dir.mkdir(mode=0o700, exist_ok=True)  # exists if an earlier initdb failed
    user = _pg_user()
    if user:
        os.chown(pg_dir, user.pw_uid, user.pw_gid)
        # The postgres user must reach its folder: the server folder only lets it through.
        settings.dir.chmod(0o711)
        probe = subprocess.run(
            ["test", "-w", str(pg_dir)], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
            check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            raise ServerError(
                f"the '{PG_OS_USER}' user cannot reach {pg_dir}: every folder above it must be "
                "searchable by that user (chmod o+x), or choose another folder with --dir"
            )
    password = secrets.token_urlsafe(24)
    pwfile = pg_dir / "initdb.pw"
    _write_private(pwfile, password + "\n")
    if user:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        _run_pg(
            "initdb", "-D", str(pg_dir / "data"), "-U", PG_ROLE, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions", cwd=pg_dir,
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    _write_pgpass(settings, password)
    log.info("Initialised a PostgreSQL cluster in %s", pg_dir / "data")


def _pg_running(settings: Settings) -> bool:
    data = settings.dir / "postgres" / "data"
    if not data.exists():
        return False
    try:
        _run_pg("pg_ctl", "status", "-D", str(data), cwd=settings.dir / "postgres")
    except ServerError:
        return False
    return True


def _start_postgres(settings: Settings) -> None:
    pg_dir = settings.dir / "postgres"
    # Loopback TCP only, and no Unix socket (Debian's default folder is not ours).
    options = f"-c listen_addresses=127.0.0.1 -p {settings.pg_port} -c unix_socket_directories=''"
    options += "".join(f" -c {shlex.quote(setting)}" for setting in settings.pg_settings)
    _run_pg(
        "pg_ctl", "start", "-D", str(pg_dir / "data"), "-l", str(pg_dir / "postgres.log"),
        "-w", "-t", "60", "-o", options, cwd=pg_dir,
    )  # fmt: skip
    # The password file names the port: keep it in step with the port of this start.
    _write_pgpass(settings, _pg_password(settings))
    log.info("PostgreSQL listening on 127.0.0.1:%d", settings.pg_port)


def _stop_postgres(settings: Settings) -> None:
    pg_dir = settings.dir / "postgres"
    _run_pg("pg_ctl", "stop", "-D", str(pg_dir / "data"), "-m", "fast", "-w", cwd=pg_dir)
    log.info("PostgreSQL stopped")


def _create_databases(settings: Settings) -> list[str]:
    """Create the tracking and auth databases where missing; return those created."""
    try:
        import psycopg2
    except ImportError:
        raise ServerError(
            "psycopg2 is not installed: `make install` installs the pinned psycopg2-binary"
        ) from None

    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=settings.pg_port,
            user=PG_ROLE,
            password=_pg_password(settings),
            dbname="postgres",
        )
    except psycopg2.Error as exc:
        raise ServerError(
            f"cannot connect to PostgreSQL on 127.0.0.1:{settings.pg_port}: {exc}".strip()
        ) from None
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    created = []
    try:
        with conn.cursor() as cur:
            for name in (TRACKING_DB, AUTH_DB):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    finally:
        conn.close()
    return created


# --- MLflow --------------------------------------------------------------------------------


def admin_credentials(first_start: bool) -> tuple[str, str | None]:
    """The admin's user name and password, from MLflow's own variables
    ``MLFLOW_AUTH_ADMIN_USERNAME`` (default ``admin``) and ``MLFLOW_AUTH_ADMIN_PASSWORD``.

    Args:
        first_start: Whether MLflow will create the admin now, which needs the password.

    Raises:
        ServerError: On a first start without a usable password.
    """
    username = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or None
    if first_start and not password:
        raise ServerError(
            "MLFLOW_AUTH_ADMIN_PASSWORD is not set: the first start creates the admin user "
            f"'{username}' with it (at least {MIN_PASSWORD_LENGTH} characters; "
            "MLFLOW_AUTH_ADMIN_USERNAME names the user, default 'admin')"
        )
    if password is not None and (
        len(password) < MIN_PASSWORD_LENGTH or password == LEGACY_DEFAULT_PASSWORD
    ):
        raise ServerError(
            f"MLFLOW_AUTH_ADMIN_PASSWORD must be at least {MIN_PASSWORD_LENGTH} characters and "
            "not MLflow's old default password"
        )
    return username, password


def _write_auth_config(settings: Settings, admin: str) -> Path:
    path = settings.dir / "auth.ini"
    _write_private(
        path,
        "# Written by `python -m irtune.server start`; read through MLFLOW_AUTH_CONFIG_PATH.\n"
        "# The admin's password is not here: MLFLOW_AUTH_ADMIN_PASSWORD gives it on first start.\n"
        "[mlflow]\n"
        f"default_permission = {settings.default_permission}\n"
        f"database_uri = {settings.store_uri(AUTH_DB)}\n"
        f"admin_username = {admin}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "# Each login costs a PBKDF2 hash (seconds on a busy CPU); remember a good one for a\n"
        "# minute. A changed password or a deleted user takes up to that long to shut out.\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n",
    )
    return path


def _secret_key(settings: Settings) -> str:
    path = settings.dir / "secret_key"
    if not path.exists():
        _write_private(path, secrets.token_hex(32) + "\n")
    return path.read_text(encoding="utf-8").strip()


def _healthy(url: str, timeout: float = 3) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _is_server(pid: int) -> bool:
    """Whether ``pid`` is still an ``mlflow server``: a pid from an old ``server.json`` may
    belong to another program by now, which ``stop`` must never signal."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return any(a.endswith(b"mlflow") for a in argv) and b"server" in argv
    return pid_alive(pid)  # no /proc: whether it lives at all


def _state(settings: Settings) -> dict | None:
    path = settings.dir / "server.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _start_mlflow(settings: Settings, admin: str, timeout: float) -> int:
    """Start ``mlflow server`` in its own session and wait until it answers; return its pid."""
    env = os.environ | {
        "PGPASSFILE": str((settings.dir / "pgpass").resolve()),
        "MLFLOW_AUTH_CONFIG_PATH": str(_write_auth_config(settings, admin).resolve()),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret_key(settings),
    }
    # The server's own client settings would be the clients' business, not the server's.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow) if mlflow.exists() else "mlflow", "server", "--app-name", "basic-auth",
        "--backend-store-uri", settings.store_uri(TRACKING_DB),
        "--artifacts-destination", settings.artifacts,
        "--host", settings.host, "--port", str(settings.port),
        "--workers", str(settings.workers), *settings.extra_args,
    ]  # fmt: skip
    log_path = settings.dir / "mlflow.log"
    with open(log_path, "a", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd, cwd=settings.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not _healthy(settings.url):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                _kill_group(proc.pid)
            tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-15:])
            raise ServerError(
                f"mlflow server did not come up on {settings.url} (log {log_path}):\n{tail}"
            )
        time.sleep(0.5)
    return proc.pid


def _kill_group(pid: int, grace: float = 10) -> None:
    """SIGTERM the process group led by ``pid`` (uvicorn's workers too); SIGKILL if needed."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# --- the commands --------------------------------------------------------------------------


def start(settings: Settings, timeout: float = 300) -> str:
    """Start PostgreSQL (initialising it the first time) and the MLflow server.

    Args:
        settings: Where and how.
        timeout: Seconds to wait for MLflow to answer (its first start migrates two
            databases: tens of seconds).

    Returns:
        The server's URL.

    Raises:
        ServerError: If anything is missing or fails to start; what this call started is
            stopped again.
    """
    state = _state(settings)
    if state and _is_server(state["pid"]) and _healthy(state["url"]):
        log.info("The server is already running at %s (pid %d)", state["url"], state["pid"])
        return state["url"]
    pg_bindir()  # fail first, and clearly, without PostgreSQL
    fresh = not (settings.dir / "postgres" / "data").exists()
    admin, _ = admin_credentials(first_start=fresh)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "Binding MLflow to %s: other machines can reach it. Every request needs a login, "
            "but it travels in clear text over HTTP: put a TLS proxy in front for a network",
            settings.host,
        )
    settings.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if fresh:
        _init_cluster(settings)
    started_pg = not _pg_running(settings)
    if started_pg:
        _start_postgres(settings)
    try:
        created = _create_databases(settings)
        if AUTH_DB in created:
            admin, _ = admin_credentials(first_start=True)
        pid = _start_mlflow(settings, admin, timeout)
    except BaseException:
        if started_pg:
            _stop_postgres(settings)
        raise
    state = asdict(settings) | {"dir": str(settings.dir), "url": settings.url, "pid": pid}
    (settings.dir / "server.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    log.info(
        "MLflow server at %s (artifacts: %s). Point the pipeline at it with "
        "tracking.uri=%s and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD",
        settings.url,
        settings.artifacts,
        settings.url,
    )
    return settings.url


def stop(settings: Settings) -> None:
    """Stop the MLflow server and PostgreSQL; nothing running is not an error."""
    state = _state(settings)
    if state and _is_server(state["pid"]):
        _kill_group(state["pid"])
        log.info("MLflow server (pid %d) stopped", state["pid"])
    (settings.dir / "server.json").unlink(missing_ok=True)
    if _pg_running(settings):
        _stop_postgres(settings)


def status(settings: Settings) -> bool:
    """Log whether MLflow and PostgreSQL run; True when both do."""
    state = _state(settings)
    mlflow_up = bool(state and _is_server(state["pid"]) and _healthy(state["url"]))
    pg_up = _pg_running(settings)
    where = f"{state['url']} (pid {state['pid']})" if state else "-"
    log.info("MLflow server: %s %s", "running at" if mlflow_up else "not running", where)
    log.info("PostgreSQL: %s", "running" if pg_up else "not running")
    return mlflow_up and pg_up


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # What follows `--` goes to `mlflow server` as it is (argparse would take it for ours).
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Options after `--` are passed to `mlflow server` (e.g. --allowed-hosts).",
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=None, help="default: .irtune/server")
    parser.add_argument("--host", default="127.0.0.1", help="MLflow's bind address")
    parser.add_argument("--port", type=int, default=5001, help="MLflow's port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port")
    parser.add_argument("--artifacts-destination", default="", help="default: <dir>/artifacts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--default-permission",
        default="EDIT",
        choices=PERMISSIONS,
        help="what users may do with others' experiments (default: EDIT, log runs to them)",
    )
    parser.add_argument(
        "--pg-setting", action="append", default=[], help="name=value, for PostgreSQL"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for MLflow")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(
        dir=(args.dir or repo_root() / ".irtune" / "server").absolute(),
        host=args.host,
        port=args.port,
        pg_port=args.pg_port,
        artifacts_destination=args.artifacts_destination,
        workers=args.workers,
        extra_args=tuple(extra),
        pg_settings=tuple(args.pg_setting),
        default_permission=args.default_permission,
    )
    try:
        if args.command == "start":
            start(settings, timeout=args.timeout)
        elif args.command == "stop":
            stop(settings)
        elif not status(settings):
            sys.exit(3)
    except ServerError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
