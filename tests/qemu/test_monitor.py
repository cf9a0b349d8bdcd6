"""monitor.py against a scripted fake QMP server on a real Unix socket."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from reconcilers.qemu.monitor import Monitor, MonitorError

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                    "capabilities": []}}


class FakeQmp:
    """Answers `replies[command]`; never answers commands missing from it; can send events."""

    def __init__(self, replies: Mapping[str, Any]) -> None:
        self.replies = dict(replies)
        self.writer: asyncio.StreamWriter | None = None
        self.received: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.send(GREETING)
        decoder, buffer = json.JSONDecoder(), ""
        while chunk := await reader.read(4096):
            buffer += chunk.decode()
            while buffer.strip():
                try:  # the client sends no newline between messages
                    message, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break
                buffer = buffer.lstrip()[end:]
                self.answer(message)
        writer.close()

    def answer(self, message: dict[str, Any]) -> None:
        command = message["execute"]
        self.received.append(command)
        if command == "qmp_capabilities":
            self.send({"return": {}, "id": message.get("id")})
        elif command in self.replies:
            self.send({"return": self.replies[command], "id": message.get("id")})

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(json.dumps(message).encode() + b"\r\n")

    def event(self, name: str, data: Mapping[str, Any]) -> None:
        self.send({"event": name, "data": data,
                   "timestamp": {"seconds": 1, "microseconds": 0}})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeQmp, Path]]:
    with tempfile.TemporaryDirectory(prefix="dq-fake-") as tmp:
        path = Path(tmp) / "qmp"
        server = FakeQmp({"query-status": {"status": "running", "running": True}})
        listener = await asyncio.start_unix_server(server.serve, path=str(path))
        try:
            yield server, path
        finally:
            listener.close()
            await listener.wait_closed()


async def test_commands_events_and_timeouts(fake: tuple[FakeQmp, Path]) -> None:
    server, path = fake
    seen: list[tuple[str, Mapping[str, Any]]] = []
    monitor = Monitor("vm", lambda name, data: seen.append((name, data)), timeout=0.3)
    await monitor.connect(path)
    assert (await monitor.execute("query-status"))["status"] == "running"
    for index in range(50):
        server.event("RESET", {"guest": True, "reason": "guest-reset", "n": index})
    server.event("STOP", {})
    assert (await monitor.execute("query-status"))["running"] is True
    assert [name for name, _ in seen] == ["RESET"] * 50 + ["STOP"]
    assert monitor._client.events.history == ()  # noqa: SLF001 - no unbounded history
    with pytest.raises(MonitorError, match="no reply within 0.3 s"):
        await monitor.execute("never-answered")
    assert (await monitor.execute("query-status"))["status"] == "running"  # still usable
    assert server.writer is not None
    server.writer.close()  # qemu went away
    await asyncio.sleep(0.05)
    with pytest.raises(MonitorError):
        await monitor.execute("query-status")
    await monitor.quit()  # a lost connection during quit is success
    await monitor.close()
    await monitor.close()


async def test_connect_failures_are_monitor_errors(tmp_path: Path) -> None:
    monitor = Monitor("vm", timeout=0.3)
    with pytest.raises(MonitorError, match="connect"):
        await monitor.connect(tmp_path / "nothing-here")
    with pytest.raises(MonitorError, match="no QMP socket recorded"):
        await monitor.connect_path("")
