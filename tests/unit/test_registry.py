"""The per-domain registry on real files: round-trips, ids, uuids, corrupt files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.state.jsondir import JsonDir, from_plain
from controller.state.registry import DomainRecord, Registry
from reconcilers.driver import RuntimeRecord
from reconcilers.history import LastStop
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


def test_corrupt_and_foreign_files_are_skipped(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.allocate_id("good")
    domains = tmp_path / "domains"
    (domains / "torn.json").write_text('{"name": "torn", "uu')
    (domains / "wrong.json").write_text('{"name": "wrong", "uuid": 7}')
    (domains / "other.json").write_text(json.dumps({"name": "good", "uuid": "x"}))
    (domains / ".good.json.abc.tmp").write_text("{")
    again = Registry(tmp_path)
    assert list(again.load_all()) == ["good"]
    assert again.allocate_id("torn") == 2  # a fresh record replaces the corrupt one
    assert Registry(tmp_path).get("torn") is not None


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
