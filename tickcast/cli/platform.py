"""`tickcast setup | up | down | status | topics create`: run the platform under supervisord."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from tickcast.cli.common import load_settings
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from tickcast.platform.broker import BrokerNodeStatus
    from tickcast.platform.postgres import PostgresStatus
    from tickcast.platform.redis_server import RedisStatus
    from tickcast.platform.spark_cluster import SparkClusterStatus

# soft_wrap: long paths and log lines stay on one line (greppable, copyable).
err_console = Console(stderr=True, soft_wrap=True)


def _report(exc: BaseException) -> int:
    """Print an expected failure as one readable line (plus log lines); return the exit code."""
    from tickcast.catalog.topics import TopicError
    from tickcast.platform.supervisor import PlatformError

    if isinstance(exc, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    if isinstance(exc, PlatformError):
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        if exc.detail:
            err_console.print(exc.detail, highlight=False, markup=False)
        return 1
    if isinstance(exc, subprocess.CalledProcessError):
        command = " ".join(map(str, exc.cmd[:3])) if isinstance(exc.cmd, list) else exc.cmd
        err_console.print(
            f"[bold red]error:[/] `{command} ...` failed with exit code {exc.returncode}",
            highlight=False,
        )
        if exc.stderr:
            output = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            err_console.print(output.strip()[-3000:], highlight=False, markup=False)
        return 1
    if isinstance(exc, (TopicError, RuntimeError, OSError)):
        message = str(exc).strip().splitlines()
        err_console.print(f"[bold red]error:[/] {message[0] if message else type(exc).__name__}",
                          highlight=False)
        return 1
    raise exc


@contextmanager
def _clear_errors(hint: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Expected failures end as a readable message and exit code, never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        code = _report(exc)
        message = hint() if hint else None
        if message:
            err_console.print(message, highlight=False)
        raise typer.Exit(code) from None


def setup_cmd() -> None:
    """Resolve the JVM jars (Maven, cached) and create the $TICKCAST_HOME directories."""
    from tickcast.platform import setup

    with _clear_errors():
        settings = load_settings()
        setup(settings)
        err_console.print(f"[bold blue]==>[/] ready: {settings.home_dir}", highlight=False)


def up_cmd(
    only: list[str] | None = typer.Option(
        None, "--only",
        help="Start just this program (repeatable): kafka, mlflow, ingest, api, dashboard, feed.",
    ),
    timeout: float = typer.Option(
        600.0, help="Seconds to wait for everything to become healthy before failing."
    ),
) -> None:
    """Start the platform under supervisord and return once it is healthy.

    Order: Kafka broker, topics, then the MLflow tracking server, the Spark ingest
    job, API, dashboard and the demo feed. Programs already running are left alone, so re-running is safe.
    Logs: $TICKCAST_HOME/logs/<program>.log.
    """
    from tickcast.platform import Supervisor, up, urls

    settings: Settings | None = None

    def hint() -> str | None:
        if settings is not None and Supervisor(settings).is_running():
            return ("Programs that did start keep running: `tickcast status` shows them, "
                    "`make down` stops everything.")
        return None

    with _clear_errors(hint):
        settings = load_settings()
        started = up(settings, only=only, timeout=timeout, console=err_console)
        table = Table.grid(padding=(0, 2))
        # Paths are long: folded, never cut with an ellipsis (one is where a password is).
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for label, value in urls(settings, started):
            table.add_row(f"[bold]{label}[/]", value)
        err_console.print("[bold green]TickCast is up.[/]")
        err_console.print(table)
        err_console.print("Status: `tickcast status`; stop: `make down` (or `tickcast down`).")


def down_cmd() -> None:
    """Stop every program cleanly (feed and ingest first, the broker last) and supervisord."""
    from tickcast.platform import down

    with _clear_errors():
        if down(load_settings(), err_console):
            err_console.print("[bold green]TickCast is down.[/]")
        else:
            err_console.print("TickCast is not running.")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


STATE_STYLE = {"RUNNING": "green", "STARTING": "yellow", "BACKOFF": "yellow", "STOPPING": "yellow"}


def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Each program's state, pid and uptime; each streaming query's (and the live scorer's) rates,
    batch and lag (Kafka messages, or Delta commits for the bars query)."""
    from tickcast.platform import collect_status

    with _clear_errors():
        status = collect_status(load_settings())
    if as_json:
        typer.echo(json.dumps(status.as_dict(), indent=2))
        return
    console = Console()
    if not status.running:
        console.print(f"TickCast is not running (home {status.home}).", highlight=False)
        return
    programs = Table(title="Programs", title_justify="left")
    for column in ("program", "state", "pid", "uptime", "info"):
        programs.add_column(column)
    for p in status.programs:
        style = STATE_STYLE.get(p.state, "red")
        # supervisord's description repeats pid and uptime for running programs.
        info = "" if p.state == "RUNNING" else p.description
        programs.add_row(p.name, f"[{style}]{p.state}[/]", str(p.pid or "-"),
                         _duration(p.uptime_seconds), info)
    console.print(programs)
    if status.kafka_nodes:
        console.print(_kafka_table(status.kafka_nodes))
    if status.kafka_nodes_error:
        console.print(f"[yellow]Kafka nodes unreachable:[/] {status.kafka_nodes_error}", highlight=False)
    if status.redis is not None:
        console.print(_redis_line(status.redis), highlight=False)
    if status.postgres is not None:
        console.print(_postgres_line(status.postgres), highlight=False)
    if status.spark is not None:
        console.print(_spark_line(status.spark), highlight=False)
        console.print(_spark_table(status.spark))
    if status.spark_error:
        console.print(f"[yellow]Spark master unreachable:[/] {status.spark_error}", highlight=False)
    if not status.queries:
        console.print("No streaming progress reported yet.")
        return
    queries = Table(title="Streaming queries", title_justify="left")
    for column in ("query", "batch", "input rows/s", "processed rows/s", "batch ms",
                   "last batch", "lag"):
        queries.add_column(column, justify="left" if column in ("query", "lag") else "right",
                           no_wrap=column == "lag")
    for q in status.queries:
        lag = ", ".join([*(f"{t}: {'?' if n is None else f'{n:,}'} messages" for t, n in q.kafka_lag.items()),
                         *(f"Delta {t}: {'?' if n is None else f'{n:,}'} commits" for t, n in q.delta_lag.items())])
        queries.add_row(
            q.name, "-" if q.batch_id is None else str(q.batch_id),
            _rate(q.input_rows_per_second), _rate(q.processed_rows_per_second),
            "-" if q.batch_duration_ms is None else f"{q.batch_duration_ms:,}",
            "-" if q.last_batch_age_seconds is None else f"{q.last_batch_age_seconds:.0f}s ago",
            lag or "-",
        )
    console.print(queries)
    if status.kafka_error:
        console.print(f"[yellow]Kafka unreachable, lag unknown:[/] {status.kafka_error}", highlight=False)


def _spark_line(spark: SparkClusterStatus) -> str:
    apps = f"; applications {', '.join(spark.active_apps)}" if spark.active_apps else "; no application"
    return f"Spark master {spark.url}: {spark.status}, cores {spark.cores_used}/{spark.cores} used{apps}"


def _spark_table(spark: SparkClusterStatus) -> Table:
    table = Table(title="Spark workers", title_justify="left")
    for column in ("worker", "state", "cores used", "memory used", "web UI"):
        # Ids and addresses whole, folded if need be: they are what one greps the logs for.
        table.add_column(column, overflow="fold")
    for w in spark.workers:
        style = "green" if w.state == "ALIVE" else "red"
        table.add_row(w.id, f"[{style}]{w.state}[/]", f"{w.cores_used}/{w.cores}",
                      f"{w.memory_used_mb:,}/{w.memory_mb:,} MiB", w.webui)
    return table


def _kafka_table(nodes: list[BrokerNodeStatus]) -> Table:
    table = Table(title="Kafka nodes", title_justify="left")
    for column in ("node", "port", "state", "leads (ticks)", "under-replicated"):
        table.add_column(column)
    for node in nodes:
        state = "[green]alive[/]" if node.alive else "[red]not registered[/]"
        table.add_row(str(node.node_id), str(node.port), state, ", ".join(map(str, node.leads)) or "-",
                      f"[{'red' if node.under_replicated else 'green'}]{node.under_replicated}[/]")
    return table


def _postgres_line(postgres: PostgresStatus) -> str:
    if postgres.error:
        return f"[yellow]PostgreSQL unreachable:[/] {postgres.error}"
    databases = ", ".join(f"{name} ({size / 2**20:,.1f} MiB, {postgres.connections.get(name, 0)} conn.)"
                          for name, size in postgres.databases.items()) or "none"
    used = sum(postgres.connections.values())
    return f"PostgreSQL {postgres.version}: {used}/{postgres.max_connections} connections; databases {databases}"


def _redis_line(redis: RedisStatus) -> str:
    if redis.error:
        return f"[yellow]Redis unreachable:[/] {redis.error}"
    bound = f" of {redis.maxmemory / 2**20:,.0f} MiB" if redis.maxmemory else ""
    keys = ", ".join(f"db{db}: {count:,}" for db, count in redis.keys.items()) or "none"
    return f"Redis {redis.version}: {(redis.used_memory or 0) / 2**20:,.1f} MiB used{bound}; keys {keys}"


def topics_create() -> None:
    """Create the topics of kafka/topics.json (existing ones are kept) and wait until visible."""
    from tickcast.catalog.topics import ensure_topics

    with _clear_errors():
        settings = load_settings()
        created = ensure_topics(settings)
    for name, new in created.items():
        err_console.print(f"{name}: {'created' if new else 'exists'}", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("setup")(setup_cmd)
    app.command("up")(up_cmd)
    app.command("down")(down_cmd)
    app.command("status")(status_cmd)
    topics = typer.Typer(help="Kafka topics (from kafka/topics.json).", no_args_is_help=True)
    topics.command("create")(topics_create)
    app.add_typer(topics, name="topics")
