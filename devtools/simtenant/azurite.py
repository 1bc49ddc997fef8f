"""Start the Azurite Table emulator from the project's pinned npm package.

By default data lives in memory only (``--inMemoryPersistence``): ``restart()``
keeps the port but loses every table and entity. With ``persistent=True`` the
data lives in a private directory and survives ``stop()`` and ``restart()``,
like a real storage account through an outage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

ACCOUNT_NAME = "devstoreaccount1"
# The well-known development storage key, published in Azurite's documentation.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
EXECUTABLE = Path("node_modules") / ".bin" / "azurite-table"
# Explicit override for checkouts whose node_modules lives elsewhere.
EXECUTABLE_ENV = "AZURITE_TABLE_BIN"
STOP_GRACE_SECONDS = 5.0


class AzuriteNotInstalled(RuntimeError):
    """The npm package is not installed where the project expects it."""


def find_azurite_table(*starts: Path) -> Path | None:
    """``node_modules/.bin/azurite-table`` in the nearest ancestor of any start directory.

    Defaults to the current directory and this package's directory, so it works
    from the repository root, from a test subdirectory and from an installed copy.
    The ``AZURITE_TABLE_BIN`` environment variable, when set, wins.
    """
    override = os.environ.get(EXECUTABLE_ENV)
    if override:
        path = Path(override)
        return path if path.is_file() else None
    roots = starts or (Path.cwd(), Path(__file__).resolve().parent)
    for root in roots:
        for directory in (root, *root.resolve().parents):
            candidate = directory / EXECUTABLE
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Azurite:
    """A running Azurite Table service; use as a context manager.

    ``connection_string`` is a full explicit development-account string, so it
    works with clients that do not understand ``UseDevelopmentStorage=true`` and
    with a non-default port.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        executable: str | Path | None = None,
        startup_timeout: float = 30.0,
        persistent: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self._executable = Path(executable) if executable is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        self.log_path = Path(self._workdir.name) / "azurite.log"
        self.persistent = persistent

    @property
    def executable(self) -> Path:
        found = self._executable or find_azurite_table()
        if found is None or not found.exists():
            raise AzuriteNotInstalled(
                f"{EXECUTABLE} not found in this directory or any parent: "
                "run `make setup` (npm ci) first"
            )
        return found

    @property
    def table_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.table_endpoint};"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Azurite:
        if self.running:
            return self
        storage = (
            ["--location", str(Path(self._workdir.name) / "data")]
            if self.persistent
            else ["--inMemoryPersistence"]
        )
        command = [
            str(self.executable),
            *storage,
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--tableHost",
            self.host,
            "--tablePort",
            str(self.port),
        ]
        log = self.log_path.open("ab")
        try:
            # Own process group: stop() can take down node and anything it spawned
            # without touching the caller's group.
            # cwd is a private temp dir because Azurite may drop files in its
            # working directory even with in-memory persistence.
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._workdir.name,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Azurite exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            if _port_open(self.host, self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"Azurite did not listen on {self.host}:{self.port} "
            f"within {self.startup_timeout} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is not None:
            return
        # Azurite saves its persistent store only on a graceful close, which it does on
        # SIGINT; SIGTERM would lose the last seconds of acknowledged writes, which no
        # real storage account does.
        self._signal_group(process, signal.SIGINT if self.persistent else signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal_group(process, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE_SECONDS)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def restart(self) -> Azurite:
        """Stop and start again on the same port; in-memory data is lost, persistent kept."""
        self.stop()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while _port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
