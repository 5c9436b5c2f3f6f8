"""The team's MLflow server as the tests see it (the ``team_server`` fixture of conftest.py
starts it); a module of its own, since ``conftest`` names two modules in this suite."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TeamServer:
    """A running team server (``python -m irtune.server start``), as the tests see it.

    Attributes:
        url: MLflow's URL (``tracking.uri``).
        admin: The admin's user name.
        password: The admin's password.
        dir: The server's folder (cluster, generated config, ``mlflow.log``, artifacts).
        pg_port: PostgreSQL's port.
    """

    url: str
    admin: str
    password: str
    dir: Path
    pg_port: int

    @property
    def port(self) -> int:
        """MLflow's port."""
        return int(self.url.rsplit(":", 1)[1])


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
