"""Who may read what TickCast writes: the owner, nobody else.

$TICKCAST_HOME holds the Delta tables, the online store, MLflow's database, the credentials
and the logs. Every TickCast process (the CLI and everything supervisord starts) creates files
under ``PRIVATE_UMASK``, and ``secure_home`` closes the home itself (0700) and whatever an
older version, or another umask, left readable in it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

# New files 0600 and directories 0700: no group or other bits. Group access, when an operator
# wants it, is a deliberate chmod/ACL on top, never a default.
PRIVATE_UMASK = 0o077
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


def restrict_process() -> int:
    """Apply ``PRIVATE_UMASK`` to this process (and the children it starts); returns the old one."""
    return os.umask(PRIVATE_UMASK)


def secure_home(home: Path) -> int:
    """Create ``home`` as 0700 and take group and other bits off everything under it.

    Returns how many paths were tightened (0 on a home already private). Symbolic links are
    neither followed nor changed: a link the owner made to a shared place stays as it is.
    """
    home.mkdir(parents=True, exist_ok=True)
    tightened = 0
    for root, dirs, files in os.walk(home):
        for name in (root, *(os.path.join(root, entry) for entry in (*dirs, *files))):
            try:
                info = os.lstat(name)
            except FileNotFoundError:  # a running process removed it meanwhile
                continue
            if stat.S_ISLNK(info.st_mode) or not info.st_mode & _OPEN_BITS:
                continue
            os.chmod(name, stat.S_IMODE(info.st_mode) & ~_OPEN_BITS)
            tightened += 1
    if tightened:
        log.info("made %d paths under %s private to their owner", tightened, home)
    return tightened
