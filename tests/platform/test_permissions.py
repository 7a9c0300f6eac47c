"""$TICKCAST_HOME is its owner's only: the home 0700, what TickCast writes 0600/0700."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tickcast.core.settings import Settings
from tickcast.platform.permissions import PRIVATE_UMASK, secure_home
from tickcast.platform.processes import TICKCAST
from tickcast.platform.supervisor import render_config


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_secure_home_closes_an_open_home_and_leaves_links_alone(tmp_path: Path) -> None:
    home = tmp_path / "var"
    (home / "delta" / "ticks").mkdir(parents=True)
    (home / "delta" / "ticks" / "part-0.parquet").write_bytes(b"x")
    (home / "mlflow.db").write_bytes(b"x")
    shared = tmp_path / "shared.txt"
    shared.write_text("not ours to change")
    (home / "link").symlink_to(shared)
    for path, mode in ((home, 0o755), (home / "delta", 0o775), (home / "delta" / "ticks", 0o755),
                       (home / "delta" / "ticks" / "part-0.parquet", 0o644), (home / "mlflow.db", 0o664),
                       (shared, 0o644)):
        os.chmod(path, mode)

    assert secure_home(home) == 5
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in (home, *sorted(home.rglob("*")))} == {
        "var": "0o700", "var/delta": "0o700", "var/delta/ticks": "0o700",
        "var/delta/ticks/part-0.parquet": "0o600", "var/mlflow.db": "0o600", "var/link": "0o777"}
    assert _mode(shared) == 0o644
    assert secure_home(home) == 0  # nothing left to do


def test_every_supervised_program_runs_under_the_private_umask(settings: Settings) -> None:
    assert PRIVATE_UMASK == 0o077
    config = render_config(settings, [])
    assert "\numask=077\n" in config.split("[rpcinterface:supervisor]")[0]


def test_the_cli_writes_files_for_its_owner_only(settings: Settings, tmp_path: Path) -> None:
    """A command run from a shell with the usual umask (022) still writes private files."""
    env = {**os.environ, "TICKCAST_HOME": str(settings.home_dir)}
    done = subprocess.run(["sh", "-c", f'umask 022 && "{TICKCAST}" alerts rules list'], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    written = [p for p in settings.home_dir.rglob("*") if not p.is_symlink()]
    assert written, "the command wrote nothing under the home"
    assert {str(p.relative_to(settings.home_dir)): oct(_mode(p) & 0o077) for p in written} == \
        {str(p.relative_to(settings.home_dir)): "0o0" for p in written}


def test_spark_writes_tables_and_checkpoints_for_their_owner_only(spark, tmp_path: Path) -> None:
    """Hadoop's file systems apply a umask of their own (022 unless told), not the process's."""
    table = tmp_path / "table"
    spark.range(3).write.format("delta").save(str(table))
    written = {str(p.relative_to(table)): oct(_mode(p)) for p in table.rglob("*")}
    assert written and {mode for mode in written.values()} <= {"0o600", "0o700"}, written
