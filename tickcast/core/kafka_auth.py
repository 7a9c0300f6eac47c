"""Who connects to the embedded Kafka broker, as which principal, with which password.

Each part of the platform connects as a principal of its own (its role), so that the broker's
ACLs (``tickcast/platform/broker_auth.py``) give each only what it needs: the feed may write
``ticks`` and nothing else, the scorer read ``ticks`` and write ``predictions``, and so on. The
passwords are generated once, at setup (``ensure_credentials``), into one JSON file readable by
its owner only (``Settings.kafka_credentials_path``); a process reads its own role's password
when it opens a client (``Settings.kafka_client_config(role)``), so no password travels on a
command line or through supervisord's environment.

The consumer groups are named here too: the clients use these names and the ACLs grant them.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal, get_args

# One principal (SCRAM user of the same name) per part of the platform. `admin` is the broker's
# super user: topics, ACLs and SCRAM users at `up`, and the broker's own inter-broker logins.
KafkaRole = Literal["admin", "feed", "ingest", "scorer", "api", "dashboard", "alerts", "events", "monitor"]
ROLES: tuple[KafkaRole, ...] = get_args(KafkaRole)
# The KRaft controller listener's user: SCRAM cannot authenticate that listener (its users live in
# the metadata the controller serves), so it takes SASL PLAIN with this static user, known to the
# broker's configuration only. The other super user besides `admin`.
CONTROLLER_USER = "controller"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192

# Consumer groups, as the clients name them and the ACLs grant them (the alert engine's is a
# setting, TICKCAST_ALERTS_CONSUMER_GROUP).
SCORER_GROUP = "tickcast-live-scorer"
# Spark's Kafka source makes up its group ids; it is given this prefix (its option groupIdPrefix).
SPARK_GROUP_PREFIX = "tickcast-ingest"


def prediction_feed_group_prefix(client: str) -> str:
    """The prefix of the never-committed group ids the API and the dashboard follow
    ``predictions`` with (one per process)."""
    return f"tickcast-{client}-"


class KafkaCredentialsError(RuntimeError):
    """The credentials file is missing, unreadable or lacks a role."""


def _missing_message(path: Path) -> str:
    return (f"no Kafka credentials in {path}: `tickcast setup` (or `make up`) generates them for the "
            "embedded broker; TICKCAST_KAFKA_EMBEDDED_AUTH=false runs that broker without authentication "
            "(local mode only)")


def read_credentials(path: Path) -> dict[str, str]:
    """{user: password} of every principal in the file (the controller's included)."""
    try:
        users = json.loads(path.read_text())["users"]
    except FileNotFoundError:
        raise KafkaCredentialsError(_missing_message(path)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KafkaCredentialsError(f"cannot read the Kafka credentials in {path}: {exc.__class__.__name__}") from None
    if not isinstance(users, dict) or not all(isinstance(v, str) and v for v in users.values()):
        raise KafkaCredentialsError(f"the Kafka credentials in {path} are malformed")
    return users


def read_password(path: Path, role: KafkaRole) -> str:
    password = read_credentials(path).get(role)
    if not password:
        raise KafkaCredentialsError(f"{path} has no password for the Kafka principal {role!r}; "
                                    "`tickcast setup` adds the missing ones")
    return password


def ensure_credentials(path: Path) -> dict[str, str]:
    """The credentials in ``path``, generating the file (mode 0600) or the passwords it lacks.

    Existing passwords are kept: the broker's storage was formatted with the admin's."""
    try:
        users = read_credentials(path)
    except KafkaCredentialsError:
        if path.exists():
            raise  # a damaged file is not replaced silently: the broker knows its passwords
        users = {}
    wanted = (*ROLES, CONTROLLER_USER)
    if all(name in users for name in wanted):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return users
    # URL-safe: the passwords go into JAAS strings and StorageTool arguments unquoted.
    users = {**{name: secrets.token_urlsafe(32) for name in wanted if name not in users}, **users}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        json.dump({"mechanism": SCRAM_MECHANISM, "users": users}, fh, indent=2)
    os.replace(tmp, path)
    return users
