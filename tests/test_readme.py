"""The README's test command and CI's must be the same command, word for word."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    assert ci_command in readme_lines
    assert ci_command.endswith("-m pytest")
