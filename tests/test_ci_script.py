"""`.ci/run` may run on a developer's or an operator's machine: it stops only what it started."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_ci_run_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(CI)], capture_output=True).returncode == 0


def test_ci_run_never_stops_processes_by_name() -> None:
    """No `pkill dovecot`/`killall`: the system Dovecot it installed is stopped through its
    service or pid file, and only when the script installed it."""
    script = CI.read_text()
    assert not re.search(r"\b(pkill|killall)\b", script)
    assert 'if [ "$installed_dovecot" = 1 ]' in script and "/run/dovecot/master.pid" in script
