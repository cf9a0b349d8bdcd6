"""`domctl run`'s flags become the settings tree; the console script loads no daemon code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import click
import pytest
from click.testing import CliRunner

from controller.cli.main import main as cli
from controller.service import command, daemon, logconfig
from controller.settings import (
    CrashLoopSettings,
    EngineSettings,
    PruneSettings,
    Settings,
    SourceSettings,
)


class FakeDaemon:
    """Stands in for the daemon: keeps the settings `run` built, runs nothing."""

    built: ClassVar[list[Settings]] = []

    def __init__(self, settings: Settings) -> None:
        self.built.append(settings)

    async def run(self) -> None:
        return None


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch) -> click.Group:
    FakeDaemon.built = []
    monkeypatch.setattr(daemon, "Daemon", FakeDaemon)
    monkeypatch.setattr(logconfig, "configure", lambda level: None)
    cli.add_command(command.run)
    return cli


def run(group: click.Group, tmp_path: Path, *flags: str) -> Settings:
    dirs = [arg for flag in ("manifests", "state-dir", "runtime-dir", "log-dir", "hooks-dir")
            for arg in (f"--{flag}", str(tmp_path / flag))]
    result = CliRunner().invoke(group, ["run", *dirs, *flags])
    assert result.exit_code == 0, result.output
    [settings] = FakeDaemon.built
    return settings


def test_without_flags_the_tree_has_its_defaults(group: click.Group, tmp_path: Path) -> None:
    settings = run(group, tmp_path)
    assert settings.engine == EngineSettings()
    assert settings.source == SourceSettings()
    assert settings.paths.hooks_dir == tmp_path / "hooks-dir"
    assert settings.metrics.address is None
    assert settings.paths.state_dir == tmp_path / "state-dir"


def test_each_flag_lands_in_its_field(group: click.Group, tmp_path: Path) -> None:
    settings = run(group, tmp_path, "--resync", "2", "--workers", "7", "--removal-grace", "1.5",
                   "--restart-backoff", "4", "--restart-backoff-max", "40",
                   "--stable-after", "9", "--hook-timeout", "5", "--metrics", ":9100")
    assert settings.source.resync == settings.engine.resync == 2.0
    assert settings.engine.workers == 7
    assert settings.engine.prune == PruneSettings(grace=1.5)
    assert settings.engine.crash_loop == CrashLoopSettings(min_interval=4, cap=40,
                                                           stable_after=9)
    assert settings.hooks.timeout == 5.0
    assert settings.metrics.address == ":9100"


def test_run_passes_the_group_log_level(group: click.Group, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    levels: list[str] = []
    monkeypatch.setattr(logconfig, "configure", levels.append)
    result = CliRunner().invoke(group, ["--log-level", "debug", "run", "--state-dir",
                                        str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert levels == ["debug"]


def test_the_console_script_module_loads_no_daemon_code() -> None:
    """`domctl get` imports the entry point's module: no engine, state store, driver or
    settings tree (`run` loads when used), and none of the libraries only `validate`,
    `-o yaml` or `run` need (start-up time)."""
    code = ("import sys, controller.service.entry; print(sorted(m for m in sys.modules if "
            "m.startswith(('controller.engine', 'controller.api', 'controller.service.daemon', "
            "'controller.service.command', 'controller.settings', 'controller.state', "
            "'controller.manifests', 'reconcilers', 'qemu', 'jsonschema', 'yaml', 'structlog', "
            "'asyncio'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_relative_directories_are_made_absolute(group: click.Group, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The working directory must not decide where a domain's files are: a restart from
    another directory would not find them."""
    monkeypatch.chdir(tmp_path)
    settings = run(group, tmp_path, "--state-dir", "rel-state", "--runtime-dir", "rel-run")
    assert settings.paths.state_dir == tmp_path / "rel-state"
    assert settings.paths.runtime_dir == tmp_path / "rel-run"
    assert all(path.is_absolute() for path in dataclasses.astuple(settings.paths))


def test_the_console_script_offers_run_and_loads_it_when_used() -> None:
    """`run` is listed and its --help works through the lazy group, as a user meets it."""
    done = subprocess.run([sys.executable, "-c",
                           "import sys; from controller.service.entry import main; "
                           "sys.argv = ['domctl', 'run', '--help']; main()"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--removal-grace" in done.stdout and "--prune-window" in done.stdout



def test_the_pool_flag_lands_in_the_qemu_driver_settings(group: click.Group, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Made absolute like the directories; without it the driver uses <state dir>/pool."""
    monkeypatch.chdir(tmp_path)
    assert run(group, tmp_path, "--pool", "rel-pool").qemu.pool_dir == tmp_path / "rel-pool"
