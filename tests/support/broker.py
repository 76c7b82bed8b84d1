"""A private Mosquitto broker on a free port, owned by the test that started it.

Fault tests stop and restart their own broker; the machine's shared broker is never touched.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from gateway.demo import find_mosquitto
from tests.support.net import free_port, wait_for_port

__all__ = ["MosquittoBroker", "find_mosquitto"]


class MosquittoBroker:
    """Runs ``mosquitto -c <private conf>`` in the foreground as a child process.

    ``extra_conf`` lines are appended to the config (TLS listeners, password files...). The same
    port is reused across ``stop()``/``start()`` so clients can reconnect to it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_conf: str = "",
        allow_anonymous: bool = True,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise FileNotFoundError("mosquitto binary not found (make test installs it)")
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {host}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "persistence false",
            # stdout, not a file: run as root, mosquitto drops to its own user, which may not
            # write into a test's private temporary directory.
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
        ]
        if extra_conf:
            lines.append(extra_conf)
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as log_file:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.host, self.port, timeout=10)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()}") from exc

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
