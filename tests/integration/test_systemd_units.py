"""The shipped unit files pass ``systemd-analyze verify`` and keep a good exposure score.

Skipped without systemd-analyze; mandatory with ``MAILBOT_REQUIRE_SYSTEMD=1`` (.ci/run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = {"mailbot.service": "mailbot.service", "mailbot@.service": "mailbot@support.service"}


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("MAILBOT_REQUIRE_SYSTEMD") == "1":
            pytest.fail("MAILBOT_REQUIRE_SYSTEMD=1 but systemd-analyze is not installed")
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return found


@pytest.mark.parametrize(("source", "instance"), sorted(UNITS.items()))
def test_unit_verifies_and_is_well_confined(tmp_path: Path, source: str, instance: str) -> None:
    analyze = _analyze()
    shutil.copy(REPO / "systemd" / source, tmp_path / source)
    unit = f"./{instance}"
    verify = subprocess.run(
        [analyze, "verify", unit], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", unit],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert score is not None, security.stdout + security.stderr
    assert float(score.group(1)) <= 2.0, security.stdout
