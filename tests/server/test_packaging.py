"""The wheel operators install (`pip install '.[server]'`) carries everything the server runs.

Built the way pip builds it for an operator (an isolated build from the local package index),
from a copy of the source tree so stale `build/` output cannot hide a missing file, then
installed into a fresh venv and migrated from a directory outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.server.live import REPO

pytestmark = pytest.mark.sqlite_only

SOURCES = ("pyproject.toml", "README.md", "app", "device", "porchlight", "migrations")


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = dist.glob("porchlight-*.whl")
    return wheel


def _source_packages() -> set[str]:
    return {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("app", "device", "porchlight")
        for init in (REPO / top).rglob("__init__.py")
    }


def test_the_wheel_ships_the_migrations_and_an_installed_server_migrates(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    scripts = {
        f"app/migrations/versions/{p.name}" for p in (REPO / "migrations/versions").glob("*.py")
    }
    assert scripts and scripts <= names
    assert {"app/migrations/env.py", "app/migrations/script.py.mako"} <= names
    # pyproject.toml lists the packages by hand: a new one must be added there.
    shipped = {
        name.rpartition("/")[0].replace("/", ".") for name in names if name.endswith("/__init__.py")
    }
    assert _source_packages() <= shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The server's dependencies come from the test venv (a path entry, so its editable
    # finder for this checkout is not loaded); porchlight itself only from the new venv.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORCHLIGHT_")}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env.update(
        {
            "PYTHONPATH": sysconfig.get_paths()["purelib"],
            "PORCHLIGHT_DATA_DIR": str(outside / "data"),
            "PORCHLIGHT_DATABASE_URL": f"sqlite:///{outside / 'porchlight.sqlite3'}",
        }
    )
    where = subprocess.run(
        [str(python), "-c", "import app.migrate as m; print(m.__file__); print(m.MIGRATIONS_DIR)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(line).is_relative_to(venv) for line in where), where
    migrate = subprocess.run(
        [str(venv / "bin" / "porchlight"), "server", "migrate"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "database schema is up to date" in migrate.stderr
    assert (outside / "porchlight.sqlite3").stat().st_size > 0
