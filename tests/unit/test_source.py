"""ManifestSource with real file operations and a real watchdog observer.

Each writer (editor atomic save, vim, `sed -i`, `git checkout`, ansible, a half-written file)
must end in the right snapshot, and no snapshot delivered on the way may lack a domain whose file
was only being rewritten: a transient removal reaching the caller would stop a VM.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import pytest
from watchdog.observers import Observer

from controller.manifests import loader
from controller.manifests import source as source_module
from controller.manifests.source import ManifestSource, Snapshot
from controller.settings import SourceSettings
from tests.support import domains
from tests.support.waiting import async_wait_until

FAST = SourceSettings(debounce=0.3, resync=30.0)


def manifest(name: str, memory: str = "64Mi") -> str:
    return domains.manifest(domains.domain(name, memory=memory, uuid=None))


def generation(name: str, memory: str = "64Mi") -> str:
    return domains.domain(name, memory=memory, uuid=None).generation


class Collector:
    """on_change for the tests: records every snapshot."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    async def wait_for(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        """The latest snapshot, once it satisfies `predicate`."""
        def latest() -> Snapshot | None:
            last = self.snapshots[-1] if self.snapshots else None
            return last if last is not None and predicate(last) else None
        return await async_wait_until(latest, "a matching snapshot", explain=lambda: (
            f"last snapshot: {self.snapshots[-1] if self.snapshots else None}"))

    def since(self, index: int) -> list[Snapshot]:
        return self.snapshots[index:]


def gens(snapshot: Snapshot) -> dict[str, str]:
    return {name: d.generation for name, d in snapshot.domains.items()}


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    return directory


@pytest.fixture
def collector() -> Collector:
    return Collector()


async def started(directory: Path, collector: Collector,
                  settings: SourceSettings = FAST) -> ManifestSource:
    src = ManifestSource(directory, collector, settings)
    await src.start()
    return src


@pytest.fixture
async def web1(manifests: Path, collector: Collector) -> AsyncIterator[ManifestSource]:
    """A directory holding a.yaml (web-1) and b.yaml (web-2), watched."""
    (manifests / "a.yaml").write_text(manifest("web-1"))
    (manifests / "b.yaml").write_text(manifest("web-2"))
    src = await started(manifests, collector)
    assert gens(collector.snapshots[-1]) == {"web-1": generation("web-1"),
                                             "web-2": generation("web-2")}
    yield src
    await src.stop()


def step() -> None:
    """The pause between two steps of a writer: the loop (and the observer) run meanwhile."""
    time.sleep(0.03)


async def assert_rewrite(manifests: Path, collector: Collector,
                         rewrite: Callable[[], None]) -> None:
    """Rewrite a.yaml to 128Mi in a thread; web-1 and web-2 must be in every snapshot on the way."""
    start = len(collector.snapshots)
    await asyncio.to_thread(rewrite)
    want = {"web-1": generation("web-1", "128Mi"), "web-2": generation("web-2")}
    final = await collector.wait_for(lambda s: gens(s) == want)
    assert not final.problems and not final.conflicts and final.readable
    for snapshot in collector.since(start):
        assert {"web-1", "web-2"} <= snapshot.domains.keys(), "a transient removal leaked"


async def test_editor_atomic_save(web1: ManifestSource, manifests: Path,
                                  collector: Collector) -> None:
    def save() -> None:
        tmp = manifests / ".a.yaml.tmp"
        tmp.write_text(manifest("web-1", "128Mi"))
        step()
        os.replace(tmp, manifests / "a.yaml")

    await assert_rewrite(manifests, collector, save)


async def test_vim_backup_and_rename(web1: ManifestSource, manifests: Path,
                                     collector: Collector) -> None:
    def vim_save() -> None:
        os.rename(manifests / "a.yaml", manifests / "a.yaml~")
        step()  # a.yaml is missing now: only the debounce keeps web-1 from being dropped
        (manifests / "a.yaml").write_text(manifest("web-1", "128Mi"))
        step()
        os.unlink(manifests / "a.yaml~")

    await assert_rewrite(manifests, collector, vim_save)


async def test_sed_in_place(web1: ManifestSource, manifests: Path, collector: Collector) -> None:
    def sed() -> None:
        subprocess.run(["sed", "-i", "s/64Mi/128Mi/", str(manifests / "a.yaml")], check=True)

    await assert_rewrite(manifests, collector, sed)


async def test_ansible_temp_file_is_never_read(web1: ManifestSource, manifests: Path,
                                               collector: Collector,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    real_load = loader.load_file_documents

    def recording_load(path: str, max_bytes: int) -> loader.Documents:
        read.append(os.path.basename(path))
        return real_load(path, max_bytes)

    monkeypatch.setattr(source_module, "load_file_documents", recording_load)
    tmp = manifests / ".ansible_tmpk2j4x9a.yaml"
    tmp.write_text(manifest("web-1", "128Mi")[:60])  # half-written, and named *.yaml
    await web1.rescan()  # a scan while the temp file sits there

    def finish() -> None:
        with tmp.open("w") as f:
            f.write(manifest("web-1", "128Mi"))
        step()
        os.replace(tmp, manifests / "a.yaml")

    await assert_rewrite(manifests, collector, finish)
    assert read and all(not name.startswith(".") for name in read)
    assert not any(s.problems for s in collector.snapshots)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_checkout_of_another_branch(tmp_path: Path, collector: Collector) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.org")
    git(repo, "config", "user.name", "Test")
    (repo / "a.yaml").write_text(manifest("web-1"))
    (repo / "b.yaml").write_text(manifest("web-2"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "main")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "a.yaml").write_text(manifest("web-1", "128Mi"))
    git(repo, "rm", "-q", "b.yaml")
    (repo / "c.yaml").write_text(manifest("web-3"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "other")
    git(repo, "checkout", "-q", "main")

    # a debounce far longer than a checkout lasts: the deleted-then-created a.yaml is never seen
    src = await started(repo, collector, SourceSettings(debounce=0.5, resync=30.0))
    try:
        assert gens(collector.snapshots[-1]) == {"web-1": generation("web-1"),
                                                 "web-2": generation("web-2")}
        start = len(collector.snapshots)
        await asyncio.to_thread(git, repo, "checkout", "-q", "other")
        want = {"web-1": generation("web-1", "128Mi"), "web-3": generation("web-3")}
        await collector.wait_for(lambda s: gens(s) == want)
        assert all("web-1" in s.domains for s in collector.since(start))
    finally:
        await src.stop()


async def test_half_written_file_keeps_its_names_until_completed(
        web1: ManifestSource, manifests: Path, collector: Collector) -> None:
    path = manifests / "a.yaml"
    text = manifest("web-1", "128Mi")
    cut = text.index("memory:") + len("memory:")
    with path.open("w") as f:
        f.write(text[:cut])  # ends in `memory:`, with no value yet
        f.flush()
        first = await collector.wait_for(lambda s: str(path) in s.problems)
        assert first.names_by_file[str(path)] == frozenset({"web-1"})
        assert "web-1" not in first.domains and "web-2" in first.domains
        assert first.problems[str(path)][0].file == str(path)
        f.write(text[cut:])
    done = await collector.wait_for(lambda s: "web-1" in s.domains)
    assert gens(done)["web-1"] == generation("web-1", "128Mi")
    assert not done.problems and not done.names_by_file


async def test_conflicting_names_are_both_refused(manifests: Path, collector: Collector) -> None:
    (manifests / "a.yaml").write_text(manifest("web-1"))
    (manifests / "b.yml").write_text(manifest("web-1", "128Mi"))
    (manifests / "notes.txt").write_text("not a manifest")
    src = await started(manifests, collector)
    try:
        snapshot = collector.snapshots[-1]
        assert not snapshot.domains and not snapshot.problems
        assert len(snapshot.conflicts["web-1"]) == 2
        (manifests / "b.yml").unlink()
        await collector.wait_for(lambda s: gens(s) == {"web-1": generation("web-1")})
    finally:
        await src.stop()


async def test_unchanged_files_are_not_parsed_again(web1: ManifestSource,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    def counting_load(path: str, max_bytes: int) -> loader.Documents:
        calls.append(path)
        return loader.Documents()

    monkeypatch.setattr(source_module, "load_file_documents", counting_load)
    snapshot = await web1.rescan()
    assert calls == [] and set(snapshot.domains) == {"web-1", "web-2"}


async def test_file_vanishing_before_it_is_read_is_simply_absent(
        manifests: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    (manifests / "a.yaml").write_text(manifest("web-1"))
    (manifests / "b.yaml").write_text(manifest("web-2"))
    real_load = loader.load_file_documents

    def delete_then_load(path: str, max_bytes: int) -> loader.Documents:
        if path.endswith("b.yaml"):
            os.unlink(path)  # removed between the listing and the open: a real ENOENT
        return real_load(path, max_bytes)

    monkeypatch.setattr(source_module, "load_file_documents", delete_then_load)
    src = await started(manifests, collector)
    try:
        snapshot = collector.snapshots[0]
        assert set(snapshot.domains) == {"web-1"} and not snapshot.problems and snapshot.readable
    finally:
        await src.stop()


async def test_configmap_symlink_swap(manifests: Path, collector: Collector) -> None:
    old, new = manifests / "..2024_01", manifests / "..2024_02"
    old.mkdir()
    (old / "a.yaml").write_text(manifest("web-1"))
    (manifests / "..data").symlink_to(old.name)
    (manifests / "a.yaml").symlink_to("..data/a.yaml")
    src = await started(manifests, collector)
    try:
        assert gens(collector.snapshots[-1]) == {"web-1": generation("web-1")}
        start = len(collector.snapshots)
        new.mkdir()
        (new / "a.yaml").write_text(manifest("web-1", "128Mi"))
        (manifests / "..data_tmp").symlink_to(new.name)
        os.replace(manifests / "..data_tmp", manifests / "..data")
        shutil.rmtree(old)
        await collector.wait_for(lambda s: gens(s) == {"web-1": generation("web-1", "128Mi")})
        assert all("web-1" in s.domains for s in collector.since(start))
    finally:
        await src.stop()


class CountingObserver(Observer):  # type: ignore[misc,valid-type]
    """The real observer, with every instance recorded so a test can see the watch re-created."""

    made: ClassVar[list[CountingObserver]] = []

    def __init__(self) -> None:
        super().__init__()
        CountingObserver.made.append(self)


@pytest.fixture
def observers(monkeypatch: pytest.MonkeyPatch) -> list[CountingObserver]:
    CountingObserver.made = []
    monkeypatch.setattr(source_module, "Observer", CountingObserver)
    return CountingObserver.made


def watching(observer: CountingObserver, directory: Path) -> bool:
    return (observer.is_alive() and bool(observer.emitters)
            and all(e.is_alive() and e.watch.path == str(directory) for e in observer.emitters))


async def test_directory_removed_then_recreated(manifests: Path, collector: Collector,
                                                observers: list[CountingObserver]) -> None:
    (manifests / "a.yaml").write_text(manifest("web-1"))
    src = await started(manifests, collector, SourceSettings(debounce=0.05, resync=0.1))
    try:
        shutil.rmtree(manifests)
        gone = await collector.wait_for(lambda s: not s.readable)
        assert not gone.domains  # the caller, seeing readable=False, prunes nothing
        assert not observers[0].is_alive() or not all(e.is_alive() for e in observers[0].emitters)
        manifests.mkdir()
        (manifests / "b.yaml").write_text(manifest("web-2"))
        await collector.wait_for(lambda s: s.readable and set(s.domains) == {"web-2"})
        assert len(observers) == 2 and watching(observers[1], manifests)
    finally:
        await src.stop()
    assert not any(o.is_alive() for o in observers)


async def test_replaced_directory_is_watched_again(tmp_path: Path, manifests: Path,
                                                  collector: Collector,
                                                  observers: list[CountingObserver]) -> None:
    (manifests / "a.yaml").write_text(manifest("web-1"))
    src = await started(manifests, collector, SourceSettings(debounce=0.05, resync=0.1))
    try:
        replacement = tmp_path / "replacement"
        replacement.mkdir()
        (replacement / "b.yaml").write_text(manifest("web-2"))
        os.rename(manifests, tmp_path / "old")  # the old watch follows the moved inode
        os.rename(replacement, manifests)
        await async_wait_until(lambda: len(observers) >= 2, "a second observer")
        assert not observers[0].is_alive() and watching(observers[1], manifests)
        (manifests / "c.yaml").write_text(manifest("web-3"))
        await collector.wait_for(lambda s: set(s.domains) == {"web-2", "web-3"})
    finally:
        await src.stop()


async def test_dead_observer_is_recreated(manifests: Path, collector: Collector,
                                          observers: list[CountingObserver]) -> None:
    src = await started(manifests, collector, SourceSettings(debounce=0.05, resync=0.1))
    try:
        await asyncio.to_thread(lambda: (observers[0].stop(), observers[0].join()))
        await async_wait_until(lambda: len(observers) >= 2, "a second observer")
        assert watching(observers[1], manifests)
        (manifests / "a.yaml").write_text(manifest("web-1"))
        await collector.wait_for(lambda s: set(s.domains) == {"web-1"})
    finally:
        await src.stop()


RECHECK = SourceSettings(debounce=0.3, resync=30.0, recheck=0.5)


async def test_in_place_rewrite_read_while_empty_is_not_a_removal(
        manifests: Path, collector: Collector) -> None:
    """`>` in a shell: truncate, then write. A scan between the two keeps web-1 as it was."""
    path = manifests / "a.yaml"
    path.write_text(manifest("web-1"))
    src = await started(manifests, collector, RECHECK)
    try:
        start = len(collector.snapshots)
        with path.open("w") as f:  # truncated now
            empty = await src.rescan()  # a scan that sees the file empty
            assert gens(empty) == {"web-1": generation("web-1")}
            f.write(manifest("web-1", "128Mi"))
        await collector.wait_for(lambda s: gens(s) == {"web-1": generation("web-1", "128Mi")})
        assert all("web-1" in s.domains for s in collector.since(start))
    finally:
        await src.stop()


@pytest.mark.parametrize("how", ["unlink", "truncate"])
async def test_a_file_gone_or_empty_counts_as_removed_once_read_again(
        manifests: Path, collector: Collector, how: str) -> None:
    (manifests / "a.yaml").write_text(manifest("web-1"))
    (manifests / "b.yaml").write_text(manifest("web-2"))
    src = await started(manifests, collector, RECHECK)
    try:
        if how == "unlink":
            (manifests / "a.yaml").unlink()
        else:
            (manifests / "a.yaml").write_text("")
        held = await src.rescan()
        assert set(held.domains) == {"web-1", "web-2"}  # not yet: it is read again first
        start = len(collector.snapshots)
        gone = await collector.wait_for(lambda s: set(s.domains) == {"web-2"})
        assert not gone.problems and not gone.names_by_file
        assert len(collector.since(start)) >= 1  # the re-check delivered it, unprompted
    finally:
        await src.stop()


def network(name: str, mtu: int = 1500) -> str:
    return (f"apiVersion: domctl/v1\nkind: Network\nmetadata: {{name: {name}}}\n"
            f"spec: {{mtu: {mtu}, ipv4: {{address: 10.1.0.1/24}}}}\n")


def network_gens(snapshot: Snapshot) -> dict[str, str]:
    return {name: n.generation for name, n in snapshot.networks.items()}


async def test_an_invalid_edit_never_takes_a_network_away(manifests: Path,
                                                          collector: Collector) -> None:
    """The networks of a file that turns invalid stay in every snapshot, on their last valid
    spec, until the file is valid again; its domains are reported as before."""
    path = manifests / "a.yaml"
    path.write_text(network("lan") + "---\n" + manifest("web-1"))
    (manifests / "b.yaml").write_text(manifest("web-2"))
    src = await started(manifests, collector)
    try:
        first = collector.snapshots[-1]
        assert set(first.networks) == {"lan"} and set(first.domains) == {"web-1", "web-2"}
        before = network_gens(first)
        path.write_text(network("lan", mtu=1) + "---\n" + manifest("web-1", "128Mi"))
        broken = await collector.wait_for(lambda s: str(path) in s.problems)
        assert network_gens(broken) == before
        assert broken.network_names_by_file == {str(path): frozenset({"lan"})}
        assert broken.names_by_file == {str(path): frozenset({"web-1"})}
        assert [p.field for p in broken.problems[str(path)]] == ["spec.mtu"]
        path.write_text(network("lan", mtu=9000) + "---\n" + manifest("web-1"))
        fixed = await collector.wait_for(lambda s: not s.problems)
        assert network_gens(fixed) != before and not fixed.network_names_by_file
        assert fixed.networks["lan"].spec.mtu == 9000
    finally:
        await src.stop()


async def test_a_network_file_emptied_is_held_then_removed(manifests: Path,
                                                          collector: Collector) -> None:
    (manifests / "net.yaml").write_text(network("lan"))
    src = await started(manifests, collector, RECHECK)
    try:
        (manifests / "net.yaml").write_text("")
        held = await src.rescan()
        assert set(held.networks) == {"lan"}  # not yet: it is read again first
        await collector.wait_for(lambda s: not s.networks)
    finally:
        await src.stop()


async def test_conflicting_networks_are_reported_by_name(manifests: Path,
                                                         collector: Collector) -> None:
    (manifests / "a.yaml").write_text(network("lan") + "---\n" + network("wan"))
    (manifests / "b.yaml").write_text(network("lan") + "---\n" + manifest("lan"))
    src = await started(manifests, collector)
    try:
        snapshot = collector.snapshots[-1]
        assert set(snapshot.networks) == {"wan"} and set(snapshot.domains) == {"lan"}
        assert set(snapshot.network_conflicts) == {"lan"} and not snapshot.conflicts
        assert len(snapshot.network_conflicts["lan"]) == 2 and not snapshot.problems
    finally:
        await src.stop()


async def test_a_fifo_and_an_oversized_file_are_problems(manifests: Path,
                                                         collector: Collector) -> None:
    os.mkfifo(manifests / "pipe.yaml")  # no writer: an ordinary open would block the scan
    (manifests / "big.yaml").write_text(manifest("web-2") + "#" * 4096)
    (manifests / "a.yaml").write_text(manifest("web-1"))
    src = await started(manifests, collector,
                        SourceSettings(debounce=0.3, resync=30.0, max_manifest_bytes=2048))
    try:
        snapshot = collector.snapshots[-1]
        assert set(snapshot.domains) == {"web-1"}
        [fifo] = snapshot.problems[str(manifests / "pipe.yaml")]
        assert "not a regular file (a FIFO)" in fifo.message
        [big] = snapshot.problems[str(manifests / "big.yaml")]
        assert "larger than the limit of 2048 bytes" in big.message
    finally:
        await src.stop()


async def test_loading_never_blocks_the_loop(manifests: Path, collector: Collector,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile file is loaded while the loop keeps running: a heartbeat task ticks during
    the load (the load waits for a tick it could never see if it ran on the loop)."""
    (manifests / "a.yaml").write_text(manifest("web-1"))
    bomb = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 12))
    (manifests / "bomb.yaml").write_text(bomb)
    ticks: list[int] = []
    saw_tick: dict[str, bool] = {}
    real_load = loader.load_file_documents

    def load_then_wait_for_a_tick(path: str, max_bytes: int) -> loader.Documents:
        try:
            return real_load(path, max_bytes)
        finally:
            before = len(ticks)
            deadline = time.monotonic() + 10
            while len(ticks) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            saw_tick[os.path.basename(path)] = len(ticks) > before

    async def heartbeat() -> None:
        while True:
            ticks.append(len(ticks))
            await asyncio.sleep(0.01)

    monkeypatch.setattr(source_module, "load_file_documents", load_then_wait_for_a_tick)
    beating = asyncio.create_task(heartbeat())
    src = await started(manifests, collector)
    try:
        snapshot = collector.snapshots[-1]
        assert saw_tick == {"a.yaml": True, "bomb.yaml": True}
        assert set(snapshot.domains) == {"web-1"}
        [problem] = snapshot.problems[str(manifests / "bomb.yaml")]
        assert "alias bomb" in problem.message
    finally:
        beating.cancel()
        await src.stop()


@pytest.mark.parametrize("how", ["atomic-rename", "write-and-close"])
async def test_a_complete_write_is_rescanned_at_once_not_after_the_quiet_period(
        manifests: Path, collector: Collector, how: str) -> None:
    """The kernel says the file is complete (IN_MOVED_TO, IN_CLOSE_WRITE): no debounce. With
    a quiet period of an hour, only that signal can bring the new snapshot."""
    src = await started(manifests, collector, SourceSettings(debounce=3600.0, resync=3600.0))
    try:
        if how == "atomic-rename":
            tmp = manifests / ".a.yaml.tmp"
            tmp.write_text(manifest("web-1"))
            os.replace(tmp, manifests / "a.yaml")
        else:
            with (manifests / "a.yaml").open("w") as f:
                f.write(manifest("web-1"))
        await collector.wait_for(lambda s: gens(s) == {"web-1": generation("web-1")})
    finally:
        await src.stop()
