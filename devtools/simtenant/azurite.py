"""Start the Azurite Table emulator, and with ``queues=True`` its Queue service, from the
project's pinned npm package.

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
# The Queue service of the same pinned package (the fan-out of many tenants runs on a queue).
QUEUE_EXECUTABLE = Path("node_modules") / ".bin" / "azurite-queue"
QUEUE_EXECUTABLE_ENV = "AZURITE_QUEUE_BIN"
STOP_GRACE_SECONDS = 5.0


class AzuriteNotInstalled(RuntimeError):
    """The npm package is not installed where the project expects it."""


def find_azurite_table(*starts: Path) -> Path | None:
    """``node_modules/.bin/azurite-table`` in the nearest ancestor of any start directory.

    Defaults to the current directory and this package's directory, so it works
    from the repository root, from a test subdirectory and from an installed copy.
    The ``AZURITE_TABLE_BIN`` environment variable, when set, wins.
    """
    return _find(EXECUTABLE, EXECUTABLE_ENV, starts)


def find_azurite_queue(*starts: Path) -> Path | None:
    """``node_modules/.bin/azurite-queue``, found as ``find_azurite_table`` finds its
    executable; ``AZURITE_QUEUE_BIN``, when set, wins."""
    return _find(QUEUE_EXECUTABLE, QUEUE_EXECUTABLE_ENV, starts)


def _find(executable: Path, env: str, starts: tuple[Path, ...]) -> Path | None:
    override = os.environ.get(env)
    if override:
        path = Path(override)
        return path if path.is_file() else None
    roots = starts or (Path.cwd(), Path(__file__).resolve().parent)
    for root in roots:
        for directory in (root, *root.resolve().parents):
            candidate = directory / executable
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
    """A running Azurite Table service, and with ``queues=True`` its Queue service too; use
    as a context manager.

    ``connection_string`` is a full explicit development-account string, so it
    works with clients that do not understand ``UseDevelopmentStorage=true`` and
    with a non-default port. It names the QueueEndpoint as well when the queues run.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        executable: str | Path | None = None,
        startup_timeout: float = 30.0,
        persistent: bool = False,
        queues: bool = False,
        queue_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.queues = queues
        self.queue_port = (queue_port or free_port(host)) if queues else None
        self._queue_process: subprocess.Popen[bytes] | None = None
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
    def queue_endpoint(self) -> str:
        if self.queue_port is None:
            raise RuntimeError("this Azurite runs no Queue service: start it with queues=True")
        return f"http://{self.host}:{self.queue_port}/{ACCOUNT_NAME}"

    @property
    def table_pid(self) -> int | None:
        """The Table service's process, while it runs (the benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None else None

    @property
    def connection_string(self) -> str:
        queue = f"QueueEndpoint={self.queue_endpoint};" if self.queues else ""
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.table_endpoint};"
            f"{queue}"
        )

    @property
    def queue_connection_string(self) -> str:
        """The connection string with both endpoints; only with ``queues=True``."""
        _ = self.queue_endpoint  # raises without the Queue service
        return self.connection_string

    @property
    def queue_executable(self) -> Path:
        found = find_azurite_queue()
        if found is None or not found.exists():
            raise AzuriteNotInstalled(
                f"{QUEUE_EXECUTABLE} not found in this directory or any parent: "
                "run `make setup` (npm ci) first"
            )
        return found

    @property
    def running(self) -> bool:
        table = self._process is not None and self._process.poll() is None
        if not self.queues:
            return table
        return table and self._queue_process is not None and self._queue_process.poll() is None

    def start(self) -> Azurite:
        if self.running:
            return self
        self.stop()  # one of the two may have died: start both afresh
        self._process = self._spawn(
            self.executable, "data", ["--tableHost", self.host, "--tablePort", str(self.port)]
        )
        self._wait_listening(self._process, self.port)
        if self.queue_port is not None:
            self._queue_process = self._spawn(
                self.queue_executable,
                "queue-data",
                ["--queueHost", self.host, "--queuePort", str(self.queue_port)],
            )
            self._wait_listening(self._queue_process, self.queue_port)
        return self

    def _spawn(self, executable: Path, data_dir: str, listen: list[str]) -> subprocess.Popen[bytes]:
        storage = (
            ["--location", str(Path(self._workdir.name) / data_dir)]
            if self.persistent
            else ["--inMemoryPersistence"]
        )
        command = [
            str(executable),
            *storage,
            "--disableTelemetry",
            "--skipApiVersionCheck",
            *listen,
        ]
        log = self.log_path.open("ab")
        try:
            # Own process group: stop() can take down node and anything it spawned
            # without touching the caller's group.
            # cwd is a private temp dir because Azurite may drop files in its
            # working directory even with in-memory persistence.
            return subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._workdir.name,
                start_new_session=True,
            )
        finally:
            log.close()

    def _wait_listening(self, process: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                code = process.returncode
                self.stop()
                raise RuntimeError(f"Azurite exited with code {code}:\n{self.log_tail()}")
            if _port_open(self.host, port):
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"Azurite did not listen on {self.host}:{port} "
            f"within {self.startup_timeout} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        processes = [p for p in (self._process, self._queue_process) if p is not None]
        self._process = self._queue_process = None
        for process in processes:
            self._stop(process)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
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
        ports = [p for p in (self.port, self.queue_port) if p is not None]
        while any(_port_open(self.host, p) for p in ports) and time.monotonic() < deadline:
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
