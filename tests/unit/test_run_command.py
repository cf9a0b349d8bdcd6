"""`domctl run`'s flags become the settings tree; the console script loads no daemon code until
`run` is parsed; each flag's help shows its own default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from controller.paths import default_paths
from controller.service import daemon, logconfig
from controller.settings import (
    CrashLoopSettings,
    EngineSettings,
    PruneSettings,
    Settings,
    SourceSettings,
)
from tests.support.cli import Result, invoke


class FakeDaemon:
    """Stands in for the daemon: keeps the settings `run` built, runs nothing."""

    built: ClassVar[list[Settings]] = []

    def __init__(self, settings: Settings) -> None:
        self.built.append(settings)

    async def run(self) -> None:
        return None


Domctl = Callable[..., Result]


@pytest.fixture
def domctl(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Domctl:
    """`domctl ARGS...` in-process, with the daemon faked."""
    FakeDaemon.built = []
    monkeypatch.setattr(daemon, "Daemon", FakeDaemon)
    monkeypatch.setattr(logconfig, "configure", lambda level: None)
    return lambda *args: invoke(capsys, args)


def run(domctl: Domctl, tmp_path: Path, *flags: str) -> Settings:
    dirs = [arg for flag in ("manifests", "state-dir", "runtime-dir", "log-dir", "hooks-dir")
            for arg in (f"--{flag}", str(tmp_path / flag))]
    result = domctl("run", *dirs, *flags)
    assert result.exit_code == 0, result.output
    [settings] = FakeDaemon.built
    return settings


def test_without_flags_the_tree_has_its_defaults(domctl: Domctl, tmp_path: Path) -> None:
    settings = run(domctl, tmp_path)
    assert settings.engine == EngineSettings()
    assert settings.source == SourceSettings()
    assert settings.paths.hooks_dir == tmp_path / "hooks-dir"
    assert settings.metrics.address is None
    assert settings.paths.state_dir == tmp_path / "state-dir"


def test_each_flag_lands_in_its_field(domctl: Domctl, tmp_path: Path) -> None:
    settings = run(domctl, tmp_path, "--resync", "2", "--workers", "7", "--removal-grace", "1.5",
                   "--restart-backoff", "4", "--restart-backoff-max", "40",
                   "--stable-after", "9", "--hook-timeout", "5", "--metrics", ":9100")
    assert settings.source.resync == settings.engine.resync == 2.0
    assert settings.engine.workers == 7
    assert settings.engine.prune == PruneSettings(grace=1.5)
    assert settings.engine.crash_loop == CrashLoopSettings(min_interval=4, cap=40,
                                                           stable_after=9)
    assert settings.hooks.timeout == 5.0
    assert settings.metrics.address == ":9100"


def test_run_passes_the_group_log_level(domctl: Domctl, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    levels: list[str] = []
    monkeypatch.setattr(logconfig, "configure", levels.append)
    for argv in (["--log-level", "debug", "run"], ["run", "--log-level", "warning"]):
        result = domctl(*argv, "--state-dir", str(tmp_path))
        assert result.exit_code == 0, result.output
    assert levels == ["debug", "warning"]


def test_the_console_script_module_loads_no_daemon_code() -> None:
    """`domctl get` imports the entry point's module: no engine, state store, driver or
    settings tree (`run` loads when used), and none of the libraries only `validate`,
    `-o yaml` or `run` need (start-up time)."""
    code = ("import sys, controller.service.entry; print(sorted(m for m in sys.modules if "
            "m.startswith(('controller.engine', 'controller.api', 'controller.service.daemon', "
            "'controller.service.command', 'controller.settings', 'controller.state', "
            "'controller.manifests', 'reconcilers', 'qemu', 'jsonschema', 'yaml', 'structlog', "
            "'click', 'asyncio'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_relative_directories_are_made_absolute(domctl: Domctl, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The working directory must not decide where a domain's files are: a restart from
    another directory would not find them."""
    monkeypatch.chdir(tmp_path)
    settings = run(domctl, tmp_path, "--state-dir", "rel-state", "--runtime-dir", "rel-run",
                   "--manifests", "./m/../rel-manifests")
    assert settings.paths.state_dir == tmp_path / "rel-state"
    assert settings.paths.manifests == tmp_path / "m" / ".." / "rel-manifests"  # as given
    assert settings.paths.runtime_dir == tmp_path / "rel-run"
    assert all(path.is_absolute() for path in settings.paths)


def test_the_console_script_offers_run_and_loads_it_when_used() -> None:
    """`run` is listed and its --help works through the lazy group, as a user meets it."""
    done = subprocess.run([sys.executable, "-c",
                           "import sys; from controller.service.entry import main; "
                           "sys.argv = ['domctl', 'run', '--help']; main()"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--removal-grace" in done.stdout and "--prune-window" in done.stdout


def test_each_flag_shows_its_own_default(domctl: Domctl) -> None:
    """Numbers from the settings tree, directories this user's own (root's here or XDG)."""
    text = " ".join(domctl("run", "--help").stdout.split())
    paths = default_paths(os.geteuid(), os.environ)
    for flag, default in {"--resync": SourceSettings().resync,
                          "--workers": EngineSettings().workers,
                          "--removal-grace": PruneSettings().grace,
                          "--restart-backoff-max": CrashLoopSettings().cap,
                          "--state-dir": paths.state_dir, "--hooks-dir": paths.hooks_dir,
                          "--metrics": "off", "--max-parallel-starts": "off"}.items():
        shown = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"[default: {default}" in shown, (flag, shown)


def test_the_pool_flag_lands_in_the_qemu_driver_settings(domctl: Domctl, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Made absolute like the directories; without it the driver uses <state dir>/pool."""
    monkeypatch.chdir(tmp_path)
    assert run(domctl, tmp_path, "--pool", "rel-pool").qemu.pool_dir == tmp_path / "rel-pool"
