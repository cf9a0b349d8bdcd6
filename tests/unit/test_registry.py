"""The per-domain registry on real files: round-trips, ids, uuids, corrupt files."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.state.jsondir import JsonDir, from_plain
from controller.state.registry import UNREADABLE, DomainRecord, Registry
from controller.state.status import DomainStatus, StatusStore
from reconcilers.driver import RuntimeRecord
from reconcilers.history import LastStop, Stalled
from reconcilers.model import (
    Accel,
    Cause,
    CpuTopology,
    CpuTune,
    DesiredState,
    Disk,
    DiskBus,
    DiskCache,
    DiskFormat,
    DomainSpec,
    DriverName,
    Lifecycle,
    LifecycleAction,
    LxcSpec,
    Metadata,
    Mount,
    Nic,
    QemuSpec,
    Reason,
    RestartPolicy,
    SerialMode,
    State,
    UpdatePolicy,
    VcpuPin,
    Vnc,
    Watchdog,
    WatchdogAction,
    WatchdogModel,
    to_plain,
)

MiB = 1024 * 1024

QEMU_SPEC = DomainSpec(
    driver=DriverName.QEMU, state=DesiredState.PAUSED, restart_policy=RestartPolicy.ON_FAILURE,
    update_policy=UpdatePolicy.RESTART, shutdown_timeout=12.5, memory=1024 * MiB,
    current_memory=768 * MiB, vcpus=2, max_vcpus=4,
    cpu=CpuTopology(model="host", sockets=1, cores=2, threads=1),
    cputune=CpuTune(shares=512, period=100000, quota=-1,
                    vcpupin=(VcpuPin(0, "0-1"), VcpuPin(1, "2,4")), emulatorpin="3"),
    lifecycle=Lifecycle(on_crash=LifecycleAction.COREDUMP_RESTART),
    qemu=QemuSpec(machine="q35", accel=Accel.TCG, kernel="/boot/vmlinuz", cmdline="console=ttyS0",
                  boot=("disk", "network"),
                  disks=(Disk("root", "/img/root.qcow2", DiskFormat.QCOW2, DiskBus.SATA, False,
                              DiskCache.WRITEBACK),
                         Disk("data", "/dev/vdb", readonly=True)),
                  serial=SerialMode.SOCKET, vnc=Vnc(port=5901, password="s3cret"),
                  guest_agent=True, panic=True,
                  watchdog=Watchdog(WatchdogModel.IB700, WatchdogAction.INJECT_NMI),
                  nics=(Nic(mac="52:54:00:12:34:56"),)))
LXC_SPEC = DomainSpec(
    driver=DriverName.LXC, memory=64 * MiB,
    lxc=LxcSpec(rootfs="/srv/rootfs", init=("/bin/sh", "-c", "sleep 1000"),
                env=(("A", "1"), ("PATH", "/bin:/usr/bin")),
                mounts=(Mount("/data", "/mnt/data"), Mount("/etc/ro", "/mnt/ro", readonly=True))))
RECORD = RuntimeRecord(name="web-1", driver=DriverName.QEMU, uuid=str(uuid.uuid4()), pid=4242,
                       boot_id="b0a7", starttime=123456,
                       extra={"qmp": "/run/domctl/web-1.qmp", "pidfile": "/run/domctl/web-1.pid"})


def through_json(value: object) -> object:
    return json.loads(json.dumps(to_plain(value)))


@pytest.mark.parametrize("spec", [QEMU_SPEC, LXC_SPEC], ids=["qemu", "lxc"])
def test_rich_specs_survive_plain_json_and_back(spec: DomainSpec) -> None:
    assert from_plain(DomainSpec, through_json(spec)) == spec


def test_runtime_record_and_metadata_survive_round_trip() -> None:
    back = from_plain(RuntimeRecord, through_json(RECORD))
    assert back == RECORD and back.driver is DriverName.QEMU and dict(back.extra) == RECORD.extra
    meta = Metadata("web-1", labels=(("tier", "web"),), annotations=(("a", "b"),))
    assert from_plain(Metadata, through_json(meta)) == meta


disks = st.builds(Disk, name=st.text("abc", min_size=1, max_size=3), source=st.just("/x"),
                  format=st.sampled_from(DiskFormat), bus=st.sampled_from(DiskBus),
                  readonly=st.booleans(), cache=st.sampled_from(DiskCache))
qemu_specs = st.builds(QemuSpec, accel=st.sampled_from(Accel),
                       disks=st.lists(disks, max_size=3).map(tuple),
                       boot=st.lists(st.sampled_from(["disk", "cdrom", "network"])).map(tuple),
                       vnc=st.none() | st.builds(Vnc, port=st.none() | st.integers(5900, 5999)),
                       watchdog=st.none() | st.builds(Watchdog,
                                                      action=st.sampled_from(WatchdogAction)))
lxc_specs = st.builds(
    LxcSpec, init=st.lists(st.text(min_size=1), min_size=1, max_size=3).map(tuple),
    env=st.dictionaries(st.text(min_size=1), st.text()).map(lambda d: tuple(sorted(d.items()))),
    mounts=st.lists(st.builds(Mount, source=st.just("/a"), target=st.just("/b"),
                              readonly=st.booleans()), max_size=2).map(tuple))
common = {"state": st.sampled_from(DesiredState), "shutdown_timeout": st.floats(0, 1e6),
          "current_memory": st.none() | st.integers(1, 2**40),
          "cputune": st.builds(CpuTune, vcpupin=st.lists(
              st.builds(VcpuPin, st.integers(0, 8), st.just("0-3")), max_size=2).map(tuple)),
          "lifecycle": st.builds(Lifecycle, on_crash=st.sampled_from(LifecycleAction))}
specs = (st.builds(DomainSpec, driver=st.just(DriverName.QEMU), qemu=qemu_specs, **common)
         | st.builds(DomainSpec, driver=st.just(DriverName.LXC), lxc=lxc_specs, **common))


@settings(max_examples=200)
@given(specs)
def test_any_spec_survives_plain_json_and_back(spec: DomainSpec) -> None:
    assert from_plain(DomainSpec, through_json(spec)) == spec


@pytest.mark.parametrize("data", [
    {"driver": "xen"},  # not an enum value
    {"driver": "qemu", "vcpus": "2"},  # wrong scalar type
    {"driver": "qemu", "vcpus": True},  # a bool is not an int here
    {"driver": "qemu", "bogus": 1},  # unknown field
    {"driver": "qemu", "qemu": {"disks": {"name": "a"}}},  # not a list
    {"vcpus": 2},  # a required field missing
])
def test_from_plain_rejects_what_does_not_fit(data: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        from_plain(DomainSpec, data)


def test_full_record_persists_across_a_new_registry(tmp_path: Path) -> None:
    record = DomainRecord(name="web-1", uuid=RECORD.uuid, id=3, runtime=RECORD,
                          live_spec=QEMU_SPEC, restarts=2,
                          last_stop=LastStop(Reason.CRASHED, Cause.EXTERNAL, 1, 1764000001.25))
    Registry(tmp_path).save(record)
    assert (tmp_path / "domains" / "web-1.json").is_file()
    assert Registry(tmp_path).load_all() == {"web-1": record}
    assert Registry(tmp_path).get("web-1") == record


def test_ids_are_smallest_free_reused_only_after_release_and_persisted(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert [reg.allocate_id(n) for n in ("a", "b", "c")] == [1, 2, 3]
    assert reg.allocate_id("b") == 2  # a holder keeps its id
    reg.release_id("b")
    assert reg.allocate_id("d") == 2  # the smallest free one, after release
    assert reg.allocate_id("e") == 4
    reg.release_id("a")
    again = Registry(tmp_path)  # a controller restart
    assert {n: r.id for n, r in again.load_all().items()} == {"a": None, "b": None, "c": 3,
                                                              "d": 2, "e": 4}
    assert again.allocate_id("b") == 1
    again.remove("c")
    assert again.allocate_id("a") == 3


def test_uuid_is_generated_once_and_kept_across_restarts(tmp_path: Path) -> None:
    generated = Registry(tmp_path).uuid_for("web-1", None)
    assert str(uuid.UUID(generated)) == generated
    assert Registry(tmp_path).uuid_for("web-1", None) == generated
    assert Registry(tmp_path).uuid_for("web-2", None) != generated


def test_uuid_from_the_manifest_wins_and_is_kept(tmp_path: Path) -> None:
    given_uuid = "5b6c1f3e-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
    reg = Registry(tmp_path)
    reg.uuid_for("web-1", None)
    assert reg.uuid_for("web-1", given_uuid) == given_uuid
    assert Registry(tmp_path).uuid_for("web-1", None) == given_uuid


def test_remove_forgets_the_uuid(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    first = reg.uuid_for("web-1", None)
    reg.remove("web-1")
    assert not (tmp_path / "domains" / "web-1.json").exists()
    assert Registry(tmp_path).uuid_for("web-1", None) != first
    reg.remove("never-there")  # no error


def quarantined(directory: Path, filename: str) -> list[Path]:
    """What fsutil.quarantine moved aside for `filename` in `directory`."""
    return sorted(directory.glob(f"{filename}.corrupt-*"))


def test_damaged_files_are_moved_aside_and_rebuilt_stalled(tmp_path: Path) -> None:
    """Crash-only start-up: no damaged record is fatal; each is moved aside and a record is
    rebuilt that holds starts (a process of the domain may still run)."""
    reg = Registry(tmp_path)
    reg.allocate_id("good")
    domains = tmp_path / "domains"
    (domains / "torn.json").write_text('{"name": "torn", "uu')
    (domains / "wrong.json").write_text('{"name": "wrong", "uuid": 7}')
    (domains / "other.json").write_text(json.dumps({"name": "good", "uuid": "x"}))
    (domains / "list.json").write_text("[1, 2]")
    (domains / "binary.json").write_bytes(bytes(range(256)) * 4)
    (domains / "nan.json").write_text(f'{{"name": "nan", "uuid": "{RECORD.uuid}", '
                                      '"version": 2, "since": NaN}')
    (domains / "deep.json").write_text("[" * 100_000)
    (domains / "dir.json").mkdir()
    (domains / "link.json").symlink_to(domains / "good.json")
    (domains / ".good.json.abc.tmp").write_text("{")
    again = Registry(tmp_path, wall=lambda: 1764000000.0)
    records = again.load_all()
    damaged = ["binary", "deep", "dir", "link", "list", "nan", "other", "torn", "wrong"]
    assert sorted(records) == sorted(["good", *damaged])
    assert sorted(again.quarantined) == damaged
    for name in damaged:
        assert len(quarantined(domains, f"{name}.json")) == 1, name
        record = records[name]
        assert record.runtime is None and record.stalled is not None
        assert record.stalled.message.startswith(UNREADABLE)
        assert f"domctl start {name}" in record.stalled.message
        assert record.stalled.epoch == record.epoch + 1 and record.generation is None
        assert Registry(tmp_path).get(name) == record  # rebuilt records are saved
    assert records["good"].id == 1 and (domains / ".good.json.abc.tmp").exists()
    assert records["other"].uuid != "x"  # nothing is taken from a foreign record
    assert again.allocate_id("torn") == 2
    assert list(Registry(tmp_path).load_all()) == sorted(records)  # nothing damaged now


@pytest.mark.parametrize("runtime_change", [
    {"pid": -1}, {"pid": 0}, {"starttime": -5}, {"name": "web-2"}, {"boot_id": ""},
    {"pid": "4242"}, {"pid": True}, {"extra": {"qmp": 7}}])
def test_an_impossible_runtime_record_is_quarantined_and_stalls(
        tmp_path: Path, runtime_change: dict[str, object]) -> None:
    """The `pid: -1` that kept `domctl run` from starting (issue 11): the record is moved
    aside, the rest of it is kept, and the domain is held until someone checks."""
    record = DomainRecord(name="web-1", uuid=RECORD.uuid, id=3, runtime=RECORD,
                          live_spec=QEMU_SPEC, restarts=2, epoch=4, generation="g4")
    plain = to_plain(record)
    plain["runtime"].update(runtime_change)
    JsonDir(tmp_path / "domains").write("web-1", plain)
    reg = Registry(tmp_path, wall=lambda: 1764000000.0)
    rebuilt = reg.get("web-1")
    assert rebuilt is not None
    assert len(quarantined(tmp_path / "domains", "web-1.json")) == 1
    assert (rebuilt.uuid, rebuilt.id, rebuilt.restarts, rebuilt.live_spec) == (
        RECORD.uuid, 3, 2, QEMU_SPEC)
    assert rebuilt.runtime is None and rebuilt.generation is None and rebuilt.epoch == 4
    assert rebuilt.stalled == Stalled(rebuilt.stalled.message if rebuilt.stalled else "", 5,
                                      1764000000.0)
    assert "web-1" in reg.quarantined


@pytest.mark.parametrize("change", [
    {"since": -1.0}, {"since": "yesterday"}, {"id": 0}, {"restarts": -1}, {"epoch": -2},
    {"version": 3}, {"uuid": "not-a-uuid"}, {"surprise": 1},
    {"last_stop": {"reason": "crashed", "cause": "guest", "epoch": 1, "at": -3.0}},
    {"conditions": [{"type": "Ready", "status": "True", "reason": "no way"}]}])
def test_a_record_wrong_elsewhere_keeps_a_valid_runtime_for_reattach(
        tmp_path: Path, change: dict[str, object]) -> None:
    """A valid runtime record is kept (re-attach still proves the process): no stall."""
    plain = to_plain(DomainRecord(name="web-1", uuid=RECORD.uuid, runtime=RECORD, epoch=2))
    plain.update(change)
    JsonDir(tmp_path / "domains").write("web-1", plain)
    rebuilt = Registry(tmp_path).get("web-1")
    assert rebuilt is not None and rebuilt.runtime == RECORD and rebuilt.stalled is None
    assert rebuilt.name == "web-1"
    assert len(quarantined(tmp_path / "domains", "web-1.json")) == 1


def test_a_damaged_record_of_a_stopped_domain_is_rebuilt_without_a_stall(tmp_path: Path
                                                                         ) -> None:
    """The old document says no process ran and the status agrees: nothing to hold."""
    plain = to_plain(DomainRecord(name="db", uuid=RECORD.uuid, epoch=1))
    plain["since"] = "garbage"
    JsonDir(tmp_path / "domains").write("db", plain)
    rebuilt = Registry(tmp_path).get("db")
    assert rebuilt is not None and rebuilt.stalled is None and rebuilt.uuid == RECORD.uuid


def test_a_rebuilt_record_takes_uuid_and_driver_from_the_status(tmp_path: Path) -> None:
    (tmp_path / "domains").mkdir()
    (tmp_path / "domains" / "web-1.json").write_bytes(b"\x00" * 64)
    status = DomainStatus(name="web-1", uuid=RECORD.uuid, driver=DriverName.LXC,
                          desired=DesiredState.RUNNING, state=State.RUNNING,
                          reason=Reason.BOOTED, pid=77)
    StatusStore(tmp_path).write(status)
    rebuilt = Registry(tmp_path).get("web-1")
    assert rebuilt is not None and rebuilt.stalled is not None
    assert (rebuilt.uuid, rebuilt.driver) == (RECORD.uuid, DriverName.LXC)


def test_a_huge_record_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "domains").mkdir()
    with open(tmp_path / "domains" / "big.json", "wb") as f:
        f.truncate(64 * 1024 ** 3)  # sparse: 64 GiB that must never be read into memory
    record = Registry(tmp_path).get("big")
    assert record is not None and record.stalled is not None
    assert "larger than" in record.stalled.message


def test_damaged_status_documents_are_moved_aside_at_load(tmp_path: Path) -> None:
    """The engine never reads status documents back; load_all (start-up) checks them, so a
    damaged one is reported then, and the next pass writes it afresh."""
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "bad.json").write_text('{"name": "bad"')
    Registry(tmp_path).load_all()
    assert len(quarantined(tmp_path / "status", "bad.json")) == 1
    assert not (tmp_path / "status" / "bad.json").exists()


def test_a_state_directory_that_is_a_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "domains").write_text("not a directory")
    reg = Registry(tmp_path)
    assert reg.load_all() == {}
    reg.allocate_id("web-1")
    assert Registry(tmp_path).get("web-1") is not None
    assert len(quarantined(tmp_path, "domains")) == 1


def test_json_dir_refuses_names_that_escape_it(tmp_path: Path) -> None:
    files = JsonDir(tmp_path)
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            files.path(bad)
    assert files.names() == [] and JsonDir(tmp_path / "missing").names() == []


def test_a_version_1_record_is_upgraded_keeping_what_reattach_needs(tmp_path: Path) -> None:
    """A record written before the ledger (no version; `started_at` in the runtime record;
    last stop and API request keyed by generation) still re-attaches its domain."""
    runtime = {k: v for k, v in to_plain(RECORD).items()}
    runtime["started_at"] = 1764000000.0
    old = {"name": "web-1", "uuid": RECORD.uuid, "driver": "qemu", "id": 2, "runtime": runtime,
           "restarts": 1, "failures": 2,
           "last_stop": {"reason": "crashed", "cause": "guest", "epoch": 1764000001.0,
                         "generation": "g1"},
           "override": {"action": "stop", "uid": 0, "generation": "g0", "at": 1764000002.0}}
    JsonDir(tmp_path / "domains").write("web-1", old)
    JsonDir(tmp_path / "status").write("web-1", {"generation": "g1", "state": "running",
                                                 "reason": "booted", "conditions": []})
    record = Registry(tmp_path).get("web-1")
    assert record is not None
    assert record.runtime is not None and record.runtime.pid == RECORD.pid
    assert (record.id, record.restarts, record.failures) == (2, 1, 2)
    assert (record.epoch, record.generation) == (0, "g1")
    assert record.last_stop == LastStop(Reason.CRASHED, Cause.GUEST, 0, 1764000001.0)
    assert record.override is not None and record.override.epoch == -1  # another generation
    assert (record.state, record.reason) == (State.RUNNING, Reason.BOOTED)


def test_a_version_1_record_that_cannot_be_upgraded_is_rebuilt(tmp_path: Path) -> None:
    JsonDir(tmp_path / "domains").write("web-1", {"name": "web-1", "uuid": RECORD.uuid,
                                                  "last_stop": {"cause": "guest"}})
    JsonDir(tmp_path / "status").write("web-1", ["not", "a", "status"])
    record = Registry(tmp_path).get("web-1")
    assert record is not None and record.stalled is not None and record.uuid == RECORD.uuid


def test_a_record_write_that_fails_is_kept_and_retried_until_it_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full state dir during a start must not lose the record: it stays in memory, is
    reported, and `flush` writes it once the disk has room again."""
    registry = Registry(tmp_path)
    registry.uuid_for("web-1", None)
    record = registry.get("web-1")
    assert record is not None
    real_write = JsonDir.write

    def full(self: JsonDir, name: str, obj: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(JsonDir, "write", full)
    started = dataclasses.replace(record, runtime=RECORD, id=1)
    assert registry.save(started) is False
    assert registry.get("web-1") == started  # kept in memory for this controller
    assert registry.flush() == ["web-1"]  # still full
    monkeypatch.setattr(JsonDir, "write", real_write)
    assert registry.flush() == []
    assert Registry(tmp_path).get("web-1") == started  # a later controller reads it
