"""Real etcd for the fleet tests: a 1- or 3-member cluster on loopback, and a TCP proxy to cut.

`EtcdCluster(directory, size)` starts Debian's `/usr/bin/etcd` members on free loopback ports,
each with its data dir under `directory` (so the leak guard knows them as this session's), and
waits until every member says it is healthy. `kill(i)` is a crash (SIGKILL), `restart(i)` starts
the member again on its data dir and ports, `stop()` kills every member:
the fixtures call it in their finalizer, whatever the test did.

`TcpProxy(target)` forwards a loopback port to `target` on threads of its own (independent of
the test's event loop and of any process using it); `cut()` closes every connection and refuses
new ones, as a host cut off from etcd while alive; `restore()` lets connections through again.
Traffic never leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ETCD = "/usr/bin/etcd"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


class EtcdCluster:
    def __init__(self, directory: Path, size: int = 1) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.members = [Member(f"m{i}", free_port(), free_port(), directory / f"m{i}",
                               directory / f"m{i}.log") for i in range(size)]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 30.0) -> None:
        for index in range(len(self.members)):
            self._spawn(index)
        self.wait_healthy(timeout)

    def _spawn(self, index: int) -> None:
        member = self.members[index]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [ETCD, "--name", member.name, "--data-dir", str(member.data_dir),
                "--listen-client-urls", f"http://{member.endpoint}",
                "--advertise-client-urls", f"http://{member.endpoint}",
                "--listen-peer-urls", member.peer_url,
                "--initial-advertise-peer-urls", member.peer_url,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"domctl-test-{os.getpid()}",
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-outputs", "stderr"]
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL)

    def healthy(self, index: int) -> bool:
        url = f"http://{self.members[index].endpoint}/health"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0, indexes: Sequence[int] | None = None) -> None:
        wanted = range(len(self.members)) if indexes is None else indexes
        deadline = time.monotonic() + timeout
        while not all(self.healthy(i) for i in wanted):
            for i in wanted:
                process = self.members[i].process
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"etcd member {i} exited: "
                                       f"{self.members[i].log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd members {list(wanted)} not healthy after {timeout} s")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        """A crash: SIGKILL, no goodbye to the other members."""
        self._end(index, signal.SIGKILL)

    def restart(self, index: int, timeout: float = 30.0) -> None:
        self._end(index, signal.SIGTERM)
        self._spawn(index)
        self.wait_healthy(timeout, [index])

    def stop(self) -> None:
        """Every member at once, killed: the data dirs go with the test, and a member that
        lost its quorum would take seconds over a graceful stop."""
        for index in range(len(self.members)):
            self._end(index, signal.SIGKILL)

    def _end(self, index: int, sig: signal.Signals) -> None:
        process = self.members[index].process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.members[index].process = None


class TcpProxy:
    """A loopback port forwarded to `target` ("host:port"), which a test can cut."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepting = self._thread(self._accept)

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    def cut(self) -> None:
        """Close every connection and refuse new ones until restore()."""
        self._open.clear()
        self._drop_all()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.clear()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._drop_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _thread(self, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            self._thread(self._pump, client, upstream)
            self._thread(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._sockets -= {source, sink}
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def require_etcd() -> None:
    """Skip the test, saying why, when Debian's etcd-server is not installed."""
    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"{ETCD} is not installed (Debian's etcd-server)")
