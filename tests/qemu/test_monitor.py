"""monitor.py and its typed commands (commands.py) against a scripted fake QMP server on a real
Unix socket: the exact command names and arguments sent, and how each reply is read."""

from __future__ import annotations

import ast
import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconcilers.qemu.commands import (
    CpuInfo,
    KvmInfo,
    MachineInfo,
    QemuVersion,
    QmpCommands,
    VmStatus,
)
from reconcilers.qemu.monitor import Monitor, MonitorError

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                    "capabilities": []}}


@dataclass(frozen=True)
class Refusal:
    """A scripted QMP error reply."""

    desc: str


HANG_UP = object()  # a scripted reply: close the connection instead (qemu after `quit`)


class FakeQmp:
    """Answers `replies[command]` (a Refusal as a QMP error; HANG_UP by closing); never answers
    commands missing from it; records every command with its arguments; can send events."""

    def __init__(self, replies: Mapping[str, Any]) -> None:
        self.replies = dict(replies)
        self.writer: asyncio.StreamWriter | None = None
        self.received: list[tuple[str, dict[str, Any] | None]] = []

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
        command, reply = message["execute"], self.replies.get(message["execute"])
        if command == "qmp_capabilities":
            self.send({"return": {}, "id": message.get("id")})
            return
        self.received.append((command, message.get("arguments")))
        if reply is HANG_UP:
            assert self.writer is not None
            self.writer.close()
        elif isinstance(reply, Refusal):
            self.send({"error": {"class": "GenericError", "desc": reply.desc},
                       "id": message.get("id")})
        elif command in self.replies:
            self.send({"return": reply, "id": message.get("id")})

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
    assert monitor._client.events.history == ()
    with pytest.raises(MonitorError, match=r"no reply within 0\.3 s"):
        await monitor.execute("never-answered")
    assert (await monitor.execute("query-status"))["status"] == "running"  # still usable
    assert server.writer is not None
    server.writer.close()  # qemu went away: the next command fails, noticed or timed out
    with pytest.raises(MonitorError):
        await monitor.execute("query-status")
    await QmpCommands(monitor).quit()  # a lost connection during quit is success
    await monitor.close()
    await monitor.close()


async def test_connect_failures_are_monitor_errors(tmp_path: Path) -> None:
    monitor = Monitor("vm", timeout=0.3)
    with pytest.raises(MonitorError, match="connect"):
        await monitor.connect(tmp_path / "nothing-here")
    with pytest.raises(MonitorError, match="no QMP socket recorded"):
        await monitor.connect_path("")


Command = Callable[[QmpCommands], Awaitable[Any]]
CPUS = [{"cpu-index": 0, "thread-id": 4301, "qom-path": "/machine/unattached/device[0]",
         "target": "x86_64", "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}},
        {"cpu-index": 1, "thread-id": 4302, "qom-path": "/machine/unattached/device[1]",
         "target": "x86_64", "props": {"core-id": 0, "thread-id": 0, "socket-id": 1}}]
MACHINES = [{"name": "pc-i440fx-7.2", "alias": "pc", "is-default": True, "cpu-max": 255,
             "hotpluggable-cpus": True, "numa-mem-supported": False, "deprecated": False,
             "default-ram-id": "pc.ram", "acpi": True},
            {"name": "none", "cpu-max": 1, "hotpluggable-cpus": False, "deprecated": False,
             "numa-mem-supported": False, "acpi": False}]

# (call, command sent, arguments sent, qemu's reply, what the call returns)
COMMANDS: list[tuple[Command, str, dict[str, Any] | None, Any, Any]] = [
    (lambda q: q.cont(), "cont", None, {}, None),
    (lambda q: q.stop(), "stop", None, {}, None),
    (lambda q: q.system_powerdown(), "system_powerdown", None, {}, None),
    (lambda q: q.system_reset(), "system_reset", None, {}, None),
    (lambda q: q.balloon(96 * 1024 * 1024), "balloon", {"value": 100663296}, {}, None),
    (lambda q: q.set_action("shutdown"), "set-action", {"reboot": "shutdown"}, {}, None),
    (lambda q: q.set_action("reset"), "set-action", {"reboot": "reset"}, {}, None),
    (lambda q: q.block_resize("libvirt-1-format", 1 << 30), "block_resize",
     {"node-name": "libvirt-1-format", "size": 1073741824}, {}, None),
    (lambda q: q.query_status(), "query-status", None,
     {"status": "guest-panicked", "running": False, "singlestep": False},
     VmStatus("guest-panicked", running=False)),
    (lambda q: q.query_cpus_fast(), "query-cpus-fast", None, CPUS,
     [CpuInfo(0, 4301), CpuInfo(1, 4302)]),
    (lambda q: q.query_name(), "query-name", None, {"name": "web-1"}, "web-1"),
    (lambda q: q.query_name(), "query-name", None, {}, None),
    (lambda q: q.query_uuid(), "query-uuid", None,
     {"UUID": "5a9f0ed2-7c8e-4c1f-9d2e-3b6f1f6f4e10"}, "5a9f0ed2-7c8e-4c1f-9d2e-3b6f1f6f4e10"),
    (lambda q: q.query_version(), "query-version", None,
     {"qemu": {"major": 7, "minor": 2, "micro": 11}, "package": "Debian 1:7.2+dfsg-7"},
     QemuVersion(7, 2, 11)),
    (lambda q: q.query_machines(), "query-machines", None, MACHINES,
     [MachineInfo("pc-i440fx-7.2", "pc", 255, is_default=True),
      MachineInfo("none", None, 1, is_default=False)]),
    (lambda q: q.qom_list_types("accel"), "qom-list-types",
     {"implements": "accel", "abstract": False},
     [{"name": "kvm-accel", "parent": "accel"}, {"name": "tcg-accel", "parent": "accel"}],
     ["kvm-accel", "tcg-accel"]),
    (lambda q: q.qom_list_types("device", abstract=True), "qom-list-types",
     {"implements": "device", "abstract": True},
     [{"name": "virtio-blk-pci", "parent": "virtio-blk-pci-base"}], ["virtio-blk-pci"]),
    (lambda q: q.query_kvm(), "query-kvm", None, {"enabled": False, "present": True},
     KvmInfo(enabled=False, present=True)),
]


@pytest.fixture
async def qmp(fake: tuple[FakeQmp, Path]) -> AsyncIterator[QmpCommands]:
    monitor = Monitor("vm", timeout=0.5)
    await monitor.connect(fake[1])
    try:
        yield QmpCommands(monitor)
    finally:
        await monitor.close()


@pytest.mark.parametrize(("call", "command", "arguments", "reply", "result"), COMMANDS,
                         ids=[f"{row[1]}-{index}" for index, row in enumerate(COMMANDS)])
async def test_each_command_sends_its_name_and_arguments_and_reads_its_reply(
        fake: tuple[FakeQmp, Path], qmp: QmpCommands, call: Command, command: str,
        arguments: dict[str, Any] | None, reply: Any, result: Any) -> None:
    server, _ = fake
    server.replies[command] = reply
    assert await call(qmp) == result
    assert server.received == [(command, arguments)]


async def test_version_reads_as_dotted_text(fake: tuple[FakeQmp, Path],
                                            qmp: QmpCommands) -> None:
    fake[0].replies["query-version"] = {"qemu": {"major": 8, "minor": 0, "micro": 2}}
    assert str(await qmp.query_version()) == "8.0.2"


@pytest.mark.parametrize(("call", "command", "reply"), [
    (lambda q: q.query_status(), "query-status", {"running": True}),
    (lambda q: q.query_cpus_fast(), "query-cpus-fast", [{"cpu-index": 0}]),
    (lambda q: q.query_uuid(), "query-uuid", []),
    (lambda q: q.query_version(), "query-version", {"qemu": {"major": "seven"}}),
    (lambda q: q.query_machines(), "query-machines", {"name": "pc"}),
    (lambda q: q.qom_list_types("accel"), "qom-list-types", [{"parent": "accel"}]),
    (lambda q: q.query_name(), "query-name", "web-1"),
])
async def test_a_reply_of_another_shape_is_a_monitor_error(
        fake: tuple[FakeQmp, Path], qmp: QmpCommands, call: Command, command: str,
        reply: Any) -> None:
    fake[0].replies[command] = reply
    with pytest.raises(MonitorError, match="unexpected reply") as caught:
        await call(qmp)
    assert caught.value.command == command


async def test_a_qmp_error_is_a_monitor_error_naming_the_command(
        fake: tuple[FakeQmp, Path], qmp: QmpCommands) -> None:
    fake[0].replies["balloon"] = Refusal("No balloon device has been activated")
    with pytest.raises(MonitorError, match="No balloon device") as caught:
        await qmp.balloon(1 << 30)
    assert caught.value.command == "balloon"


async def test_quit_succeeds_when_qemu_hangs_up(fake: tuple[FakeQmp, Path],
                                               qmp: QmpCommands) -> None:
    fake[0].replies["quit"] = HANG_UP
    await qmp.quit()
    assert fake[0].received == [("quit", None)]


def test_only_commands_py_sends_commands() -> None:
    """Every other module of the qemu driver goes through the typed methods (monitor.py's own
    `execute` is qemu.qmp's)."""
    package = Path(__file__).resolve().parents[2] / "reconcilers" / "qemu"
    senders = {path.name for path in package.glob("*.py")
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Attribute) and node.attr == "execute"}
    assert senders == {"commands.py", "monitor.py"}
