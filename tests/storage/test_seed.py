"""The NoCloud seed: its documents, the real ISO (read back, labelled for blkid), its rebuilds,
and the refusals of a user-data or network-config file, each naming its field."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconcilers.model import CloudInit
from reconcilers.storage import seed
from reconcilers.storage.errors import Refused

FIELD = "spec.qemu.cloudInit"
UUID = "5d0c7a52-3b1e-4c55-9a51-6f2b3c1d0e7a"
USER = "#cloud-config\nhostname: web\n#guestkit-marker: alpha\n"


def test_the_documents_default_instance_id_and_hostname() -> None:
    files = seed.documents(CloudInit(user_data=USER), UUID, "web-1", FIELD)
    assert files == {"meta-data": f"instance-id: {UUID}\nlocal-hostname: web-1\n".encode(),
                     "user-data": USER.encode()}
    given = seed.documents(CloudInit(meta_data=(("instance-id", "iid-2"), ("region", "x")),
                                     network_config="version: 2\n"), UUID, "web-1", FIELD)
    assert given == {"meta-data": b"instance-id: iid-2\nlocal-hostname: web-1\nregion: x\n",
                     "user-data": b"", "network-config": b"version: 2\n"}


def test_files_are_read_when_the_seed_is_built(tmp_path: Path) -> None:
    user, network = tmp_path / "user-data", tmp_path / "net.yaml"
    user.write_text(USER)
    network.write_text("network: {version: 2}\n")
    spec = CloudInit(user_data_file=str(user), network_config_file=str(network))
    first = seed.documents(spec, UUID, "vm", FIELD)
    assert (first["user-data"], first["network-config"]) == (USER.encode(),
                                                             b"network: {version: 2}\n")
    user.write_text("#!/bin/sh\necho changed\n")
    assert seed.documents(spec, UUID, "vm", FIELD)["user-data"] == b"#!/bin/sh\necho changed\n"


def test_the_iso_is_built_read_back_and_rebuilt_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "cidata.iso"
    files = seed.documents(CloudInit(user_data=USER), UUID, "vm", FIELD)
    assert seed.ensure(path, files)
    assert seed.read(path) == files
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", "-s", "TYPE", str(path)],
                           capture_output=True, text=True, check=True).stdout.split()
    assert label == ["cidata", "iso9660"]
    made = path.stat()
    assert not seed.ensure(path, dict(files))  # the same content: not rewritten
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    changed = {**files, "user-data": b"#cloud-config\n#guestkit-marker: beta\n"}
    assert seed.ensure(path, changed)
    assert seed.read(path) == changed
    path.write_bytes(b"not an iso")
    assert seed.read(path) is None and seed.ensure(path, files)


@pytest.mark.parametrize("text,words", [
    ("hostname: web\n", "user-data must start with #cloud-config, #!"),
    ("#cloud-config\nusers:\n  - name: a\n   bad: indent\n", "not valid YAML: line 4"),
    ("#cloud-config\n- a list\n", "must be a YAML mapping, not a list"),
])
def test_a_user_data_file_is_checked(text: str, words: str, tmp_path: Path) -> None:
    user = tmp_path / "user-data"
    user.write_text(text)
    with pytest.raises(Refused) as refused:
        seed.documents(CloudInit(user_data_file=str(user)), UUID, "vm", FIELD)
    assert refused.value.field == f"{FIELD}.userDataFile"
    assert words in refused.value.message and str(user) in refused.value.message


def test_what_cannot_be_read_is_refused_naming_the_field(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block the controller
    for path, words in ((fifo, "is not a regular file"), (tmp_path / "gone", "cannot read")):
        with pytest.raises(Refused, match=words) as refused:
            seed.documents(CloudInit(network_config_file=str(path)), UUID, "vm", FIELD)
        assert refused.value.field == f"{FIELD}.networkConfigFile"
    listed = tmp_path / "list.yaml"
    listed.write_text("- not a mapping\n")
    with pytest.raises(Refused, match=r"a network config .* must be a YAML mapping"):
        seed.documents(CloudInit(network_config_file=str(listed)), UUID, "vm", FIELD)
