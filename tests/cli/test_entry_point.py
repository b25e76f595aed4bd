from __future__ import annotations

import subprocess
import sys

from porchlight.cli import GROUPS, main


def test_help_lists_every_command_group(capsys) -> None:
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for group in GROUPS:
        assert group.name in out


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "usage: porchlight" in capsys.readouterr().out


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "porchlight.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.startswith("porchlight ")


def test_device_help_loads_neither_the_http_client_nor_the_config_schema() -> None:
    """`porchlight device ... --help` on a Pi answers without importing what the commands
    themselves need (httpx, pydantic, the clip store): they load when a command runs."""
    probe = (
        "import sys\n"
        "from porchlight.cli import main\n"
        "for argv in (['device', '--help'], ['device', 'consent', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 0, exit_.code\n"
        "heavy = {'httpx', 'pydantic', 'device.clipstore', 'device.sync'}\n"
        "print('loaded:', sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--clips" in done.stdout
    assert done.stdout.strip().endswith("loaded: []"), done.stdout[-300:]
