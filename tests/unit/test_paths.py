"""Default directories for root and for users."""

from pathlib import Path

from controller.paths import default_paths, runtime_dir


def test_root_defaults_are_the_system_places() -> None:
    paths = default_paths(0, {"HOME": "/root", "XDG_RUNTIME_DIR": "/run/user/0"})
    assert paths.state_dir == Path("/var/lib/domctl")
    assert paths.runtime_dir == Path("/run/domctl")
    assert paths.manifests == Path("/etc/domctl/manifests")


def test_user_defaults_follow_xdg() -> None:
    env = {"HOME": "/home/ada", "XDG_RUNTIME_DIR": "/run/user/1000"}
    paths = default_paths(1000, env)
    assert paths.state_dir == Path("/home/ada/.local/state/domctl")
    assert paths.runtime_dir == Path("/run/user/1000/domctl")
    assert paths.hooks_dir == Path("/home/ada/.config/domctl/hooks")
    custom = default_paths(1000, {**env, "XDG_STATE_HOME": "/srv/state"})
    assert custom.state_dir == Path("/srv/state/domctl")


def test_user_without_runtime_dir_gets_a_private_tmp_dir() -> None:
    assert default_paths(1000, {"HOME": "/home/ada"}).runtime_dir == Path("/tmp/domctl-1000")


def test_ensure_creates_the_writable_dirs(tmp_path: Path) -> None:
    paths = default_paths(1000, {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    paths.ensure()
    assert paths.state_dir.is_dir() and paths.runtime_dir.is_dir() and paths.log_dir.is_dir()
    assert not paths.manifests.exists()


def test_the_cli_finds_its_socket_where_the_daemon_puts_it() -> None:
    for euid, env in ((0, {"XDG_RUNTIME_DIR": "/run/user/0"}), (1000, {"HOME": "/home/ada"}),
                      (1000, {"XDG_RUNTIME_DIR": "/run/user/1000/"})):
        assert runtime_dir(euid, env) == str(default_paths(euid, env).runtime_dir)
