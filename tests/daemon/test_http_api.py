"""The HTTP API of a real `domctl run` through clients that are not ours (issue 17 point 5):
curl --unix-socket (GET a domain, POST an action, a followed events stream and a watch read
line by line, the read-only socket refusing a POST with 403) and Ansible's `uri` module.

One controller and one labelled diskless tcg VM for the module; the last test removes it and
sees a watch of it and a watch of every domain under a label selector say it is deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.domains import domain

from .conftest import Controller

pytestmark = pytest.mark.qemu
LABELS = (("app", "shop"), ("tier", "web"))


def curl(ctl: Controller, path: str, *args: str, read_only: bool = False) -> tuple[int, Any]:
    """(status code, JSON body) of one request made by curl over the controller's socket."""
    sock = ctl.runtime / ("domctl-ro.sock" if read_only else "domctl.sock")
    done = subprocess.run(["curl", "-sS", "--unix-socket", str(sock), "-w", "\n%{http_code}",
                           *args, f"http://localhost{path}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


class CurlStream:
    """A streaming request held open by curl -N; its lines read by a thread, so that a test
    can wait for one with a timeout."""

    def __init__(self, ctl: Controller, path: str) -> None:
        self.proc = subprocess.Popen(
            ["curl", "-sSN", "--unix-socket", str(ctl.socket), f"http://localhost{path}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next(self, timeout: float = 60.0) -> dict[str, Any]:
        line = self._lines.get(timeout=timeout)
        assert line is not None, "curl's stream ended"
        item: dict[str, Any] = json.loads(line)
        return item

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._thread.join(5)


@contextlib.contextmanager
def curl_stream(ctl: Controller, path: str) -> Iterator[CurlStream]:
    stream = CurlStream(ctl, path)
    try:
        yield stream
    finally:
        stream.close()


@pytest.fixture(scope="module")
def vm(controller: Controller) -> str:
    name = controller.name("http")
    labelled = domain(name)
    controller.apply(dataclasses.replace(
        labelled, metadata=dataclasses.replace(labelled.metadata, labels=LABELS)))
    controller.wait_state(name, "running", "booted")
    return name


def test_curl_gets_a_domain_and_selects_by_label(controller: Controller, vm: str) -> None:
    code, [document] = curl(controller, f"/v1/domains/{vm}")
    assert code == 200 and document["state"] == "running", document
    assert document["labels"] == dict(LABELS)
    code, selected = curl(controller, "/v1/domains?labelSelector=app=shop,tier!=db",
                          read_only=True)
    assert code == 200 and [doc["name"] for doc in selected] == [vm], selected
    code, refused = curl(controller, "/v1/domains?labelSelector=app=shop,,")
    assert code == 400 and refused["error"]["type"] == "BadRequest", refused
    code, missing = curl(controller, "/v1/domains/no-such-vm")
    assert code == 404 and missing["error"]["type"] == "NotFound", missing


def test_the_read_only_socket_refuses_a_post_with_403(controller: Controller, vm: str) -> None:
    code, refused = curl(controller, f"/v1/domains/{vm}/actions/stop", "-X", "POST",
                         read_only=True)
    assert code == 403 and refused["error"]["type"] == "PermissionDenied", refused
    assert str(controller.socket) in refused["error"]["message"]
    assert (controller.status(vm) or {}).get("state") == "running"


def test_curl_posts_actions_while_it_follows_the_events(controller: Controller,
                                                        vm: str) -> None:
    mark = len(controller.log_lines())
    with curl_stream(controller, f"/v1/events?follow=1&name={vm}") as events:
        # subscribed once the controller logged the request (no await in between)
        controller.wait_for(lambda: controller.logged("api request", mark, op="events",
                                                      domain=vm), "the events request", vm)
        code, suspended = curl(controller, f"/v1/domains/{vm}/actions/suspend", "-X", "POST")
        assert code == 200 and suspended["state"] == "paused", suspended
        record = events.next()
        assert record["event"] == "suspended", record
        assert record["causeDetail"] == {"uid": os.getuid()}, record
        code, resumed = curl(controller, f"/v1/domains/{vm}/actions/resume", "-X", "POST",
                             "-H", "Content-Type: application/json", "-d", "{}")
        assert code == 200 and resumed["state"] == "running", resumed
        record = events.next()
        assert (record["event"], record["cause"]) == ("resumed", "api"), record
    asked = [(a["action"], a["causeDetail"]) for a in controller.audit(vm) if a["cause"] == "api"]
    assert asked, controller.audit(vm)  # the peer's uid (SO_PEERCRED) reached the audit log
    assert all(detail.get("uid") == os.getuid() for _, detail in asked), asked


def test_ansible_uri_module_reads_a_domain(controller: Controller, vm: str,
                                           tmp_path: Path) -> None:
    env = {**os.environ, "ANSIBLE_LOCALHOST_WARNING": "False", "HOME": str(tmp_path),
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "remote")}
    done = subprocess.run(
        ["ansible", "localhost", "-m", "uri", "-a",
         f"unix_socket={controller.runtime / 'domctl-ro.sock'} "
         f"url=http://localhost/v1/domains/{vm} return_content=true"],
        capture_output=True, text=True, timeout=180, check=False, env=env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout.partition("=>")[2])
    assert result["status"] == 200 and result["json"][0]["name"] == vm, result
    assert result["json"][0]["labels"] == dict(LABELS)


def test_a_watch_says_deleted_when_the_domain_goes(controller: Controller, vm: str) -> None:
    with curl_stream(controller, "/v1/domains/never-defined?watch=1") as never:
        assert never.next() == {"name": "never-defined", "deleted": True}
    with curl_stream(controller, f"/v1/domains/{vm}?watch=1") as watch, \
            curl_stream(controller, "/v1/domains?watch=1&labelSelector=app=shop") as shop:
        assert watch.next()["name"] == vm
        assert shop.next()["name"] == vm  # the only domain with that label
        controller.remove_manifest(f"{vm}.yaml")
        for stream in (watch, shop):
            while not (document := stream.next()).get("deleted"):
                assert document["name"] == vm, document
            assert document == {"name": vm, "deleted": True}
    assert controller.status(vm) is None
