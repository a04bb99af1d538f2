"""The Makefile's set-up: `make run` installs what running needs, `make test` adds the rest.

A real install into a fresh virtual environment takes minutes and the package index, so these
tests ask make what it would do (`make -n`) for a virtual environment of their own: the
commands printed are the ones `make run` and `make test` run on a fresh machine, and the stamp
files they leave decide what a later `make` does again.
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = "-r requirements.lock"
DEV_LOCK = "-r requirements-dev.lock"


def _dry_run(target: str, venv: Path) -> list[str]:
    """The commands `make target` would run with `venv` as the virtual environment."""
    # A make running this suite passes its own flags and variables down: not to this one.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(  # noqa: S603 (make, on our own Makefile)
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), f"VENV={venv}", target],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def _stamp(path: Path, *after: Path) -> Path:
    """A stamp file newer than the files it depends on, as an install leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    newest = max(file.stat().st_mtime for file in after) + 10
    os.utime(path, (newest, newest))
    return path


def _installs(commands: list[str]) -> list[str]:
    return [line for line in commands if " -m pip install " in line or " -m venv " in line]


def test_make_run_installs_the_runtime_lock_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    commands = _dry_run("run", venv)
    installs = _installs(commands)
    assert any(RUNTIME_LOCK in line for line in installs), commands
    assert not any("requirements-dev.lock" in line for line in commands), commands
    assert not any("-e verifier" in line for line in commands), commands
    assert any(" -m pip check" in line for line in commands), commands
    assert commands[-1].startswith(f"{venv}/bin/auth-service serve"), commands


def test_make_test_on_a_fresh_machine_installs_both_locks_in_order(tmp_path: Path) -> None:
    commands = _dry_run("test", tmp_path / "venv")
    installs = _installs(commands)
    runtime = next(i for i, line in enumerate(installs) if RUNTIME_LOCK in line)
    dev = next(i for i, line in enumerate(installs) if DEV_LOCK in line)
    assert " -m venv " in installs[0], commands
    assert runtime < dev, commands
    assert any("-e verifier" in line for line in installs), commands


def test_make_test_after_make_run_adds_the_development_lock_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _stamp(venv / ".installed-run", ROOT / "requirements.lock", ROOT / "pyproject.toml")
    installs = _installs(_dry_run("test", venv))
    assert [DEV_LOCK in line for line in installs] == [True, False], installs  # then verifier/
    assert "-e verifier" in installs[1], installs


def test_after_make_test_neither_run_nor_test_installs_again(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run = _stamp(venv / ".installed-run", ROOT / "requirements.lock", ROOT / "pyproject.toml")
    _stamp(
        venv / ".installed", run, ROOT / "requirements-dev.lock", ROOT / "verifier/pyproject.toml"
    )
    for target in ("run", "test"):
        commands = _dry_run(target, venv)
        assert len(commands) == 1, commands
        assert commands[0].startswith(f"{venv}/bin/"), commands
