"""Hostile manifests are bounded: size, nesting, aliases, file kinds and the length of messages.

Each case is refused with a located problem (FILE:LINE:COLUMN: FIELD: MESSAGE), never with an
exception out of the loader, a stall or a message quoting a value whole.
"""

from __future__ import annotations

import concurrent.futures
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from controller.manifests.errors import QUOTE_CHARS, ManifestError, Problem
from controller.manifests.loader import load_file, load_paths, load_text
from controller.manifests.yamlsource import MAX_ALIASES, MAX_DEPTH, MAX_NODES
from controller.settings import SourceSettings
from tests.support.cli import Result, invoke

T = TypeVar("T")

HEAD = "apiVersion: domctl/v1\nkind: Domain\nmetadata:\n  name: web-1\n"
GOOD = HEAD + "spec:\n  driver: qemu\n  memory: 64Mi\n"


def problems(text: str, filename: str = "m.yaml") -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load_text(text, filename)
    return caught.value.problems


def bounded(call: Callable[[], T]) -> T:
    """`call()` in a thread: a test of something that used to block fails instead of hanging."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=60)
    finally:
        pool.shutdown(wait=False)


@pytest.fixture
def validate(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    return lambda *args: bounded(lambda: invoke(capsys, ["validate", *args]))


def test_deep_nesting_is_a_located_problem_not_a_recursion_error() -> None:
    text = HEAD + "spec:\n  x: " + "[" * 990 + "]" * 990 + "\n"
    [problem] = problems(text)
    assert (problem.file, problem.line, problem.field) == ("m.yaml", 6, "(yaml)")
    assert problem.column == 6 + MAX_DEPTH - 2  # the first bracket beyond the limit (the
    # document and spec mappings are the first two levels)
    assert f"nested more than {MAX_DEPTH} levels deep" in problem.message


def test_nesting_up_to_the_limit_reaches_the_schema() -> None:
    deep = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)  # with the document and spec levels
    found = problems(GOOD + f"  extra: {deep}\n")
    assert [p.field for p in found] == ["spec.extra"]


def test_cli_validate_reports_deep_nesting_without_a_traceback(
        tmp_path: Path, validate: Callable[..., Result]) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 990 + "]" * 990 + "\n")
    result = validate(str(path))
    assert result.exit_code == 1
    assert f"{path}:1:" in result.output and "(yaml): nested more than" in result.output
    assert "Traceback" not in result.output


def alias_bomb(levels: int) -> str:
    """A billion laughs: each level a list of nine aliases of the level below (9^levels)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_from_counts_alone() -> None:
    text = alias_bomb(12)  # 9^12 ≈ 2.8e11 values expanded: expanding it never ends
    assert len(text) < 1024
    [problem] = problems(text)
    assert problem.field == "(yaml)" and "alias bomb" in problem.message
    assert problem.line == 5  # 9^4 × 10 > MAX_NODES: refused at the first alias past it
    assert 9 ** 4 * 9 > MAX_NODES > 9 ** 3 * 9 * 2


def test_more_aliases_than_the_limit_are_refused() -> None:
    aliases = "\n".join("    - *m" for _ in range(MAX_ALIASES + 1))
    text = GOOD + "  qemu:\n    cmdline: &m x\n  extra:\n" + aliases + "\n"
    [problem] = problems(text)
    assert f"more than {MAX_ALIASES} aliases" in problem.message
    assert problem.line == 10 + MAX_ALIASES + 1  # the first alias past the limit


def test_a_recursive_alias_is_refused() -> None:
    [problem] = problems(GOOD + "  extra: &loop [1, *loop]\n")
    assert (problem.line, problem.column) == (8, 20)
    assert "refers to a node that contains it" in problem.message


def test_aliases_and_merge_keys_still_work_and_duplicates_are_found_once() -> None:
    text = textwrap.dedent("""\
        apiVersion: domctl/v1
        kind: Domain
        metadata:
          name: web-1
        spec:
          driver: qemu
          memory: 64Mi
          qemu:
            disks:
              - &disk {name: root, source: /srv/a.img, format: raw}
              - <<: *disk
                name: data
                source: /srv/b.img
        """)
    [domain] = load_text(text, "m.yaml")
    assert domain.spec.qemu is not None and [d.name for d in domain.spec.qemu.disks] == \
        ["root", "data"]
    dup = "x: &d {a: 1, a: 2}\n" + "".join(f"y{i}: *d\n" for i in range(50))
    assert [p.line for p in problems(dup)] == [1]  # the aliased mapping is walked once


def test_numbers_python_will_not_convert_are_problems() -> None:
    [problem] = problems(GOOD.replace("64Mi", "1" * 5000))
    assert problem.field == "(yaml)" and "cannot be read" in problem.message
    [problem] = problems(GOOD.replace("64Mi", "'" + "9" * 5000 + "Mi'"))
    assert problem.message.startswith("a value is out of range")


def test_messages_quote_a_short_prefix_of_a_value() -> None:
    huge = "A" * 500_000
    cases = {  # field: (manifest, what the message shows of the value)
        "spec.memory": (GOOD.replace("64Mi", f"'{huge}'"), "A" * QUOTE_CHARS),
        f"spec.{'A' * QUOTE_CHARS}": (GOOD + f"  ? {huge}\n  : 1\n", "A" * QUOTE_CHARS),
        "spec.qemu": (GOOD + f"  qemu: !!binary {huge}\n", "b'\\x00"),  # bytes: reprlib
    }
    for field, (text, shown) in cases.items():
        [problem] = problems(text)
        assert problem.field.startswith(field)
        assert len(str(problem)) < 500, str(problem)[:500]  # the known fields included
        assert shown in problem.message


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    assert len(load_file(path, max_bytes=len(GOOD))) == 1
    with pytest.raises(ManifestError) as caught:
        load_file(path, max_bytes=len(GOOD) - 1)
    [problem] = caught.value.problems
    assert (problem.line, problem.column, problem.field) == (1, 1, "(file)")
    assert f"{len(GOOD)} bytes: larger than the limit of {len(GOOD) - 1} bytes" in \
        problem.message and "--max-manifest-bytes" in problem.message


def test_the_default_limit_refuses_a_50_mb_manifest(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("w") as f:
        f.write(GOOD.replace("64Mi", "'"))
        f.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NULs after the header
    result = load_paths([tmp_path])
    [problem] = result.problems
    assert problem.field == "(file)"
    assert f"limit of {SourceSettings().max_manifest_bytes} bytes" in problem.message


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: an ordinary open would block for ever
    elif kind == "device":
        path = Path("/dev/zero")  # an ordinary read would never end
    else:
        path.mkdir()
    with pytest.raises(ManifestError) as caught:
        bounded(lambda: load_file(path))
    [problem] = caught.value.problems
    assert problem.field == "(file)" and "not a regular file" in problem.message


def test_cli_validate_refuses_a_fifo_named_or_in_a_directory(
        tmp_path: Path, validate: Callable[..., Result]) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "good.yaml").write_text(GOOD)
    for target in (tmp_path / "pipe.yaml", tmp_path):
        result = validate(str(target))
        assert result.exit_code == 1
        assert f"{tmp_path / 'pipe.yaml'}:1:1: (file): not a regular file (a FIFO)" in \
            result.output
