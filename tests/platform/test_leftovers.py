"""`make down` stops what the programs left behind: a process in a group of its own in
supervisord's session (as Airflow's task supervisors are) is stopped; the session's leader and
processes of other sessions are not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tickcast.platform.control import stop_leftovers

# A session leader (standing in for supervisord) that starts a child in a process group of its
# own, prints the child's pid, and waits.
LEADER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], process_group=0)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_task_left_in_its_own_group_is_stopped_and_nothing_else(tmp_path: Path) -> None:
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], process_group=0)
    try:
        child = int(leader.stdout.readline())
        pidfile = tmp_path / "supervisord.pid"
        pidfile.write_text(f"{leader.pid}\n")

        stopped = stop_leftovers(pidfile, grace_seconds=5)

        assert len(stopped) == 1 and "time.sleep(120)" in stopped[0]
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
        assert leader.poll() is None and outsider.poll() is None
        assert stop_leftovers(tmp_path / "missing.pid") == []
    finally:
        for proc in (leader, outsider):
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"
