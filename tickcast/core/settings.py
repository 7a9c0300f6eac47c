"""Typed settings, read from the environment (prefix ``TICKCAST_``) and the project's ``.env``.

Every process loads them once, with ``load_settings``, and passes the object down: to the
jobs, the services, their workers. Nothing here touches the filesystem; a relative
``TICKCAST_HOME`` is taken from the project root, whatever the working directory (the Feast
CLI runs in ``feature_repo/``, the platform from the root: both see the same home).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickcast.core import kafka_auth
from tickcast.core.intervals import IntervalName
from tickcast.core.kafka_auth import KafkaRole
from tickcast.core.profiles import apply_profile, kafka_node_port

REPO_ROOT = Path(__file__).resolve().parents[2]

# Values that ship in examples and must never reach a shared deployment.
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "test", "token"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKCAST_", env_file=REPO_ROOT / ".env", extra="ignore", frozen=True
    )

    mode: Literal["local", "production"] = "local"
    # What `up` runs. "single": one process of each engine (one Kafka node, Spark local[*], SQLite
    # stores). "cluster": the same code on distributed engines, all started on this machine to
    # prove the path: three KRaft nodes (replication factor 3, min.insync.replicas 2), a Spark
    # standalone master and workers, PostgreSQL for every database and Redis for the online
    # stores and the API's shared counters. A profile only changes defaults
    # (tickcast/core/profiles.py): a setting given in the environment still wins.
    profile: Literal["single", "cluster"] = "single"
    home: Path = Field(default=Path("var"), description="Data and state root")
    jars_dir: Path = Field(
        default=REPO_ROOT / ".cache" / "jars",
        description="JVM jars resolved by Maven (broker and Spark extras)",
    )

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # How every client connects to an external cluster (kafka_embedded=false), as one principal.
    # The embedded broker ignores these: see kafka_embedded_auth.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # The embedded broker takes SASL/SCRAM-SHA-512 logins only and authorizes by ACLs, one
    # principal per part of the platform (tickcast/core/kafka_auth.py), their passwords generated
    # at setup into kafka_credentials_path (mode 0600). False runs it PLAINTEXT and open to every
    # local process: a private sandbox or the tests' throwaway broker, refused outside local mode.
    kafka_embedded_auth: bool = True
    kafka_broker_port: int = 9092
    kafka_controller_port: int = 9093
    # Embedded KRaft nodes, each a broker and a controller: node i (from 0) listens on
    # kafka_broker_port + 2i for clients and kafka_controller_port + 2i for the quorum.
    kafka_nodes: int = Field(default=1, ge=1, le=9)
    kafka_broker_heap: str = "1g"
    topic_ticks: str = "ticks"
    topic_predictions: str = "predictions"
    topic_alerts: str = "alerts"
    topic_dead_letter: str = "ticks.dead-letter"
    topic_partitions: int = 4
    topic_replication_factor: int = Field(default=1, ge=1)
    # A write acknowledged by all (acks=all) is on at least this many replicas.
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    # False when kafka_bootstrap_servers points at an external cluster: `up` then skips the embedded broker.
    kafka_embedded: bool = True

    # A tick the broker has not acknowledged within this long (buffered and retried meanwhile)
    # is reported failed, and counted in the feed's error log and exit status.
    producer_delivery_timeout_seconds: float = Field(default=120.0, gt=0)

    # Spark
    spark_master: str = "local[*]"
    # With spark_workers > 0 `up` runs a Spark standalone cluster from the jars in the pyspark
    # wheel: a master on loopback at spark_master_port (its web UI at spark_master_webui_port,
    # worker i's at spark_master_webui_port + i) and this many workers, each offering
    # spark_worker_cores cores and spark_worker_memory.
    # Each application takes at most spark_cores_max cores, so the streaming queries and the
    # batch jobs run side by side, with executors of spark_executor_memory.
    spark_workers: int = Field(default=0, ge=0, le=16)
    spark_master_port: int = 7077
    spark_master_webui_port: int = 8181
    spark_worker_cores: int = Field(default=2, ge=1)
    spark_worker_memory: str = "2g"
    spark_cores_max: int = Field(default=1, ge=1)
    spark_executor_memory: str = "1g"
    spark_shuffle_partitions: int = 4
    spark_driver_memory: str = "2g"
    # The driver's RPC and block-manager ports listen here (Spark's default is every interface).
    # A standalone cluster's workers must reach the driver: give them an address they can route to.
    spark_driver_host: str = "127.0.0.1"
    ingest_trigger_seconds: float = 1.0
    ingest_max_offsets_per_trigger: int = 500_000
    # The ingest job (and its JVM) runs this much nicer than normal: it is throughput work, and
    # on a small machine it would otherwise take the CPU the live scorer and the API answer with.
    ingest_niceness: int = Field(default=10, ge=0, le=19)
    # The bars query (bars, features, the quality audit) yields to the hot path when it runs in a
    # process of its own (`tickcast stream ingest --query bars`, as the platform runs it).
    bars_niceness: int = Field(default=15, ge=0, le=19)
    # A tick older than its own feed's newest tick by more than this is late.
    late_tolerance_seconds: int = 300
    # How long the ticks query remembers an accepted msg_id (its state store, processing time).
    # A copy sent later is judged late rather than a duplicate unless its feed stalled that long.
    dedupe_memory_seconds: int = Field(default=900, ge=1)
    # The bars query (bars, features, quality audit) reads `ticks` as a Delta stream at this interval.
    bars_trigger_seconds: float = Field(default=2.0, gt=0)
    # Ticks stamped further than this in the future are rejected.
    future_tolerance_seconds: int = 300

    # Models and serving
    market_index_symbol: str = "MKT"
    predictor_lookback_bars: int = 5
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    dashboard_refresh_seconds: float = 2.0
    # A certificate and its key (PEM) make the API and the dashboard serve HTTPS. Outside local
    # mode, binding either off loopback without them is refused: keys and sessions would cross
    # the network in clear text.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Host headers the dashboard answers (comma-separated; "*" for any): a request naming another
    # host is refused, so a DNS-rebinding page cannot read the dashboard through a victim's browser.
    dashboard_allowed_hosts: str = "127.0.0.1,localhost"
    # Signs the session cookie. Unset in local mode: generated once under $TICKCAST_HOME/auth.
    dashboard_session_secret: SecretStr | None = None
    dashboard_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Failed sign-ins per user name and per client address (the `limits` library's notation).
    dashboard_login_rate_limit: str = "10/minute"
    api_workers: int = Field(default=1, ge=1)
    # uvicorn's line per request; off, a request that fails (>= 400) is still logged once.
    # At thousands of requests a second the access log costs a third of the throughput.
    api_access_log: bool = False
    # Listing the symbols in bars_1d scans a column; readers share the result this long.
    store_symbols_cache_seconds: float = Field(default=5.0, ge=0)
    # API keys are required on every data route; off only for a private local sandbox.
    api_auth_enabled: bool = True
    # Another database for the API keys (SQLAlchemy URL, e.g. PostgreSQL); unset, the embedded
    # PostgreSQL (postgres_embedded), else a SQLite file under the home.
    api_keys_database_url: SecretStr | None = None
    # Requests per key (the `limits` library's notation), unless the key sets its own.
    api_rate_limit: str = "100/second"
    # Where the counters live: memory:// per process, or redis://host:port shared by workers;
    # unset, the embedded Redis when there is one (redis_embedded), else memory://.
    api_rate_limit_storage: str | None = None
    # A shared storage (Redis) that does not answer within this bound (connect or reply) is
    # taken as down: the limits fall back to per-process counters rather than holding a request
    # (the check runs on the event loop) or failing it; `rate_limit_storage_unavailable` fires.
    api_rate_limit_storage_timeout_seconds: float = Field(default=0.25, gt=0, le=10)
    # While it is down, it is pinged this often (off the request path) and used again once it answers.
    api_rate_limit_storage_retry_seconds: float = Field(default=5.0, gt=0, le=600)
    # How often the API polls the online store for new predictions (GET cache, WebSocket) when it
    # does not follow the Kafka `predictions` topic: publishing there is off
    # (TICKCAST_SCORER_PUBLISH_KAFKA=false), or the broker or topic cannot be reached.
    api_poll_seconds: float = Field(default=0.05, gt=0)
    # A verified key is trusted this long before it is looked up again (revocation delay).
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    # Bounds against clients that hold resources (serving/bounds.py, tickcast/cli/serve.py). A
    # larger body gets 413 before it is read (the largest real one, POST /score of 100 supplied
    # sequences, is about 400 KB); the same bound covers the dashboard.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Requests without a valid key, per client address: a flood of made-up keys costs a 429,
    # not a key lookup each (the `limits` library's notation).
    api_unauthenticated_rate_limit: str = "20/second"
    # Per key, for routes that read files or run models (history, bars, explanations, scoring,
    # models): their own budget, so they cannot use up the one of the cached GETs ...
    api_expensive_rate_limit: str = "10/second"
    # ... and at most this many at once per worker; more get 503 with Retry-After at once
    # rather than queueing in the thread pool while the hot path waits for the GIL.
    api_expensive_concurrency: int = Field(default=2, ge=1, le=64)
    # WebSocket /ws/predictions: symbols one connection may follow, open connections per key
    # (per worker), and commands per second per connection (more: closed with code 1008).
    api_ws_max_symbols: int = Field(default=1000, ge=1)
    api_ws_max_connections_per_key: int = Field(default=20, ge=1)
    api_ws_command_rate_limit: str = "20/second"
    # A WebSocket that authenticates by its first message has this long to send it.
    api_ws_auth_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # uvicorn's connection timeouts for the API and the dashboard, against slow-loris clients: an
    # idle keep-alive connection is closed after `http_keep_alive_seconds`; the request line and
    # headers must arrive within `http_header_timeout_seconds` of the connection (or of the
    # previous request) and be at most `http_max_header_bytes`; a body must arrive whole within
    # `http_body_timeout_seconds` of its headers (else 408).
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    # The live scorer (`tickcast stream score`): the bar interval it scores, and how often it asks
    # MLflow for a new champion (a promotion is picked up without a restart).
    scorer_interval: IntervalName = "1d"
    scorer_reload_seconds: float = Field(default=10.0, gt=0)
    # Publish every prediction on the Kafka `predictions` topic. The API follows that topic when this
    # is on (TICKCAST_SCORER_PUBLISH_KAFKA, read by both), and polls the online store when it is off.
    scorer_publish_kafka: bool = True
    # The live scorer reloads the closed bars and features from Delta this often (the stream's
    # and backfills' corrections), appends its predictions to Delta this often, and waits at
    # most this long for ticks when it has nothing to score.
    live_reload_seconds: float = Field(default=300.0, gt=0)
    live_history_seconds: float = Field(default=5.0, gt=0)
    live_poll_seconds: float = Field(default=0.02, gt=0)
    # The live scorer saves its open bars with the Kafka offsets they include this often (and on
    # stop); a restart, even after SIGKILL, resumes from there with no tick missed or counted twice.
    live_checkpoint_seconds: float = Field(default=5.0, gt=0)
    # A move of the market index makes every symbol due for rescoring; at most this many of those
    # are scored per cycle (a symbol's own tick is scored in the next cycle regardless).
    live_rescore_per_cycle: int = Field(default=1000, ge=1)
    # The newest msg_ids kept in that checkpoint, to recognise duplicates across a restart.
    live_checkpoint_msg_ids: int = Field(default=100_000, ge=0)
    # How long the live scorer waits for the online store's write lock (another process holding
    # it) before it reports `online_store_unavailable`, keeps the rows and goes on scoring: a
    # write retried every cycle, rather than a scoring loop stalled behind SQLite's 30 s.
    live_store_timeout_seconds: float = Field(default=2.0, gt=0, le=60)

    # Features: the stream recomputes a touched symbol's features from its trailing bars,
    # looked for within this many times TRAILING_BARS intervals before the touched bar.
    features_lookback_factor: float = Field(default=4.0, gt=0)

    # Data quality (Great Expectations): data docs are rebuilt at most this often by the stream.
    quality_docs_interval_seconds: float = Field(default=60.0, ge=0)

    # Table maintenance (`tickcast maintain`, run by the platform every maintain_interval_seconds):
    # small files compacted toward maintain_target_file_mb; files no longer in the table, and log
    # entries, removed after vacuum_retention_hours (a query down for longer than that cannot
    # resume from its checkpoint: the versions it would read are gone); rows of a table with a
    # retention column deleted after its retention.
    maintain_interval_seconds: float = Field(default=600.0, gt=0)
    maintain_target_file_mb: int = Field(default=128, ge=1)
    vacuum_retention_hours: int = Field(default=24, ge=0)
    predictions_retention_days: int = Field(default=90, ge=1)
    quality_results_retention_days: int = Field(default=30, ge=1)
    model_monitoring_retention_days: int = Field(default=180, ge=1)

    # Airflow (the batch side: `airflow/`, its own environment): its components run under the
    # platform when enabled; the UI and its API on airflow_host:airflow_port. The metadata
    # database is SQLite under the home unless airflow_database_url names another (PostgreSQL).
    # airflow_parallelism bounds the LocalExecutor's worker processes (its default, 32, starts
    # 32 idle workers: ~5 GB on a 2-core machine).
    airflow_enabled: bool = True
    airflow_host: str = "127.0.0.1"
    airflow_port: int = 8080
    airflow_parallelism: int = Field(default=4, ge=1, le=64)
    airflow_database_url: SecretStr | None = None

    # PostgreSQL (Debian's package) run by `up`: one server for MLflow's backend store, the alert
    # engine's database, Airflow's metadata and the API keys, each a database of its own. It
    # takes connections on a unix socket in a directory only the owner can enter (no TCP
    # listener), so it needs no password. A *_database_url setting still names another server.
    postgres_embedded: bool = False
    postgres_port: int = 5433

    # Redis (Debian's package) run by `up` on loopback at redis_port, with a password generated
    # at setup (redis_password_path). It serves every Redis consumer left without an address of
    # its own: the Feast online store (feast_online_store=redis), the API's rate-limit counters
    # and the latest predictions (predictions_store=redis).
    redis_embedded: bool = False
    redis_port: int = 6390
    # The embedded Redis's memory bound. At the bound it refuses writes (noeviction) rather than
    # drop a key: every key it holds (rate-limit counters, predictions, features) must stay.
    redis_maxmemory_mb: int = Field(default=256, ge=16)
    # Where the scorer keeps the latest prediction per symbol for the API: a SQLite file under
    # the home (one machine), or Redis, which several API workers and hosts share.
    predictions_store: Literal["sqlite", "redis"] = "sqlite"
    # Another Redis for the predictions (redis://[:password@]host:port/db); unset, the embedded one.
    predictions_redis_url: SecretStr | None = None
    # Each connect and reply of that Redis within this bound: a paused Redis fails a read (the API
    # answers 503, its in-memory copy keeps serving) or a write (the scorer keeps the rows).
    predictions_redis_timeout_seconds: float = Field(default=1.0, gt=0, le=60)

    # Feature store (Feast): SQLite online store by default, Redis by configuration.
    feast_online_store: Literal["sqlite", "redis"] = "sqlite"
    # Feast's Redis connection string: "host:port[,db=N][,password=...]"; unset, the embedded
    # Redis (redis_embedded), else 127.0.0.1:6379.
    feast_redis_connection: str | None = None
    # Each Redis connect and reply of the online store within this bound (unless the connection
    # string sets socket_timeout/socket_connect_timeout): a paused Redis fails a push or a read
    # instead of hanging the stream's batch or an API request.
    feast_redis_timeout_seconds: float = Field(default=2.0, gt=0, le=300)
    # The stream pushes each micro-batch's features to the online store.
    feast_push_enabled: bool = True

    # Alerts (`tickcast alerts`): the rules and the outbox live in this database (SQLAlchemy URL;
    # default a SQLite file under the home, e.g. postgresql+psycopg://user:pass@host/db in production).
    alerts_database_url: str | None = None
    # The dashboard's address in messages (each alert links to its symbol's page).
    alerts_dashboard_url: str | None = None
    # A channel without its credentials is a dry-run sink: messages are rendered, logged and
    # recorded as if sent. SMS: Twilio's account SID, auth token and sending number.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    # Another base for every Twilio API host (a proxy, or the tests' stand-in server).
    twilio_api_base: str | None = None
    # E-mail: a SendGrid API key, the sender, and the API's host (the EU one, or a stand-in).
    sendgrid_api_key: SecretStr | None = None
    sendgrid_from_email: str = "alerts@tickcast.invalid"
    sendgrid_api_host: str = "https://api.sendgrid.com"
    # Webhooks: each JSON POST carries an HMAC-SHA256 of its body under this secret.
    alerts_webhook_secret: SecretStr | None = None
    # A provider call is given up after this long (then retried, as after a 5xx or a 429).
    alerts_http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Attempts per delivery, with exponential backoff and full jitter from the base up to the
    # cap (a provider's Retry-After, when longer, wins); after the last one it is dead-lettered.
    alerts_max_attempts: int = Field(default=6, ge=1, le=50)
    alerts_retry_base_seconds: float = Field(default=2.0, gt=0)
    alerts_retry_max_seconds: float = Field(default=300.0, gt=0)
    # The engine's Kafka consumer group (its offsets are committed after the outbox is written).
    alerts_consumer_group: str = "tickcast-alerts"
    # The pipeline monitor: a query (or the scorer) unseen for this long is reported stopped;
    # one whose batches take this many times its trigger, behind. Checked this often.
    alerts_stall_seconds: float = Field(default=60.0, gt=0)
    alerts_behind_factor: float = Field(default=3.0, gt=1)
    alerts_monitor_seconds: float = Field(default=10.0, gt=0)
    # Kafka messages a query may be behind before `kafka_lag` fires.
    alerts_lag_messages: int = Field(default=100_000, ge=1)
    # A ticks batch quarantining at least this share of at least this many records fires
    # `quarantine_spike`.
    alerts_quarantine_share: float = Field(default=0.05, gt=0, le=1)
    alerts_quarantine_min_records: int = Field(default=100, ge=1)
    # The monitor also turns the alerts firing in Prometheus (the rules of infra/prometheus/) into
    # pipeline events, each check, and resolves those that fired within the look-back and stopped.
    # Each read of Prometheus' API is bounded by the timeout; an unreachable Prometheus resolves nothing.
    alerts_from_prometheus: bool = True
    # Only the alerts whose name starts with this ("": all): a Prometheus of the operator's own
    # (prometheus_url) may hold alerts of other systems.
    alerts_prometheus_alert_prefix: str = "Tickcast"
    alerts_prometheus_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    alerts_prometheus_lookback_seconds: float = Field(default=3600.0, ge=60)

    # The `retrain` DAG (weekly, and when the monitor asks): this experiment config (a path
    # relative to the project root, or absolute) is evaluated walk-forward, trained, registered
    # and put to the promotion gate. The default, experiments/demo.yaml, is the demo market's:
    # with the demo feed on and no bars for its symbols, its planted history is loaded first.
    retrain_config: str = "experiments/demo.yaml"
    # The `monitor` DAG (hourly) watches the champion: drift of the last monitor_live_days of
    # its inputs against its training data (PSI >= monitor_psi_threshold and KS p-value below
    # monitor_ks_pvalue, with at least monitor_min_rows live rows; drift triggers a retrain),
    # and its realised performance over the last monitor_window_days of stored predictions
    # against its predecessor and the momentum baseline: rolled back when its IC trails one by
    # more than max(monitor_rollback_margin, monitor_rollback_z standard errors) while
    # monitor_rollback_persistence new outcomes arrive, with monitor_min_outcomes behind each IC.
    monitor_live_days: int = Field(default=30, ge=1)
    monitor_psi_threshold: float = Field(default=0.25, gt=0)
    monitor_ks_pvalue: float = Field(default=0.01, gt=0, lt=1)
    monitor_min_rows: int = Field(default=100, ge=1)
    monitor_window_days: int = Field(default=60, ge=1)
    monitor_rollback_margin: float = Field(default=0.02, ge=0)
    monitor_rollback_z: float = Field(default=3.0, ge=0)
    monitor_rollback_persistence: int = Field(default=400, ge=1)
    monitor_min_outcomes: int = Field(default=200, ge=1)

    # Alternative data (`tickcast altdata`, Airflow's `alt_data` DAG). A source with its key set is
    # read from its provider's HTTP API; without one, from the drop folder
    # $TICKCAST_HOME/inbox/alt_data/<kind>/ (CSV or JSON files). Macro: FRED's API (series ids);
    # news: a NewsAPI-style /v2/everything; earnings: a Finnhub-style earnings calendar;
    # fundamentals: SEC EDGAR's company facts (keyless, but the SEC asks for a contact in the
    # User-Agent, so it is live only when altdata_sec_user_agent is set).
    fred_api_key: SecretStr | None = None
    fred_api_base: str = "https://api.stlouisfed.org"
    news_api_key: SecretStr | None = None
    news_api_base: str = "https://newsapi.org"
    earnings_api_key: SecretStr | None = None
    earnings_api_base: str = "https://finnhub.io"
    sec_api_base: str = "https://data.sec.gov"
    sec_tickers_url: str = "https://www.sec.gov/files/company_tickers.json"
    altdata_sec_user_agent: str | None = None
    # Which macro series and which symbols are collected (symbols: none means the symbols with
    # stored daily bars).
    altdata_macro_series: str = "DGS10,T10Y2Y,UNRATE,CPIAUCSL"
    altdata_symbols: str | None = None
    # Bounds on every provider call: seconds per request, attempts (429 and 5xx are retried
    # with backoff, never sooner than Retry-After), pages per query, bytes per response.
    altdata_http_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    altdata_http_attempts: int = Field(default=5, ge=1, le=20)
    altdata_retry_max_seconds: float = Field(default=60.0, gt=0)
    altdata_max_pages: int = Field(default=50, ge=1, le=10_000)
    altdata_max_response_bytes: int = Field(default=50_000_000, ge=1_000)

    # MLflow tracking. Without a tracking URI, `up` runs a local server over the same
    # SQLite store and artifact directory that commands use directly.
    mlflow_host: str = "127.0.0.1"
    mlflow_port: int = 5000
    # A remote tracking server (e.g. http://mlflow:5000): used instead of the local store.
    mlflow_tracking_uri: str | None = None
    # Its basic-auth credentials, handed to mlflow as MLFLOW_TRACKING_USERNAME/PASSWORD (the
    # local server's admin password is generated at setup instead: tracking.admin_password_file).
    mlflow_tracking_username: str | None = Field(default=None, min_length=1, max_length=256)
    mlflow_tracking_password: SecretStr | None = None
    # Bounds on each HTTP request to a tracking server (mlflow's MLFLOW_HTTP_REQUEST_TIMEOUT and
    # _MAX_RETRIES, whose defaults, 120 s and 7 backed-off retries, let a server that accepts and
    # never answers hold a caller for a quarter of an hour): the scorer's champion check ends,
    # reports and is tried again instead.
    mlflow_http_timeout_seconds: int = Field(default=10, ge=1, le=600)
    mlflow_http_max_retries: int = Field(default=2, ge=0, le=10)

    # Metrics over time. `up` runs the pipeline exporter (`tickcast metrics serve`: each streaming
    # query's and the scorer's progress as Prometheus metrics) on loopback at pipeline_metrics_port,
    # and Prometheus (Debian's package, installed by the bootstrap) on loopback at prometheus_port,
    # scraping it and the API every prometheus_scrape_seconds, its data under
    # $TICKCAST_HOME/prometheus kept prometheus_retention_days and at most prometheus_retention_mb.
    # With prometheus_url (a Prometheus of your own, scraping the same targets) `up` runs none and
    # the dashboard reads that one. The ports are not Prometheus' usual 9090, which a system-wide
    # Prometheus started by the Debian package may hold.
    pipeline_metrics_port: int = 9191
    # Where the exporter listens: loopback, unless a Prometheus on another host scrapes it (a pod of
    # its own in Kubernetes). Its numbers are the pipeline's rates and lags, no data and no secret.
    pipeline_metrics_host: str = "127.0.0.1"
    prometheus_port: int = 9190
    prometheus_scrape_seconds: float = Field(default=5.0, ge=1, le=300)
    prometheus_retention_days: int = Field(default=15, ge=1)
    prometheus_retention_mb: int = Field(default=1024, ge=64)
    prometheus_url: str | None = None
    # Kafka's JVM metrics: with a port, each embedded node `up` runs carries the Prometheus JMX
    # exporter as a Java agent serving /metrics on loopback at this port + node id - 1 (0: none).
    # Off in the single profile: the agent takes a fixed port, and a taken port stops the JVM.
    kafka_jmx_exporter_port: int = Field(default=0, ge=0, le=65535)

    # Demo feed that `tickcast up` runs (synthetic ticks) so a fresh platform shows live data.
    demo_feed_enabled: bool = True
    demo_feed_symbols: int = 20
    demo_feed_rate: float = 40.0
    # The demo feed's seed: the same live market on every `make up` (its universe is drawn for
    # demo_feed_symbols symbols, the demo history's for its experiment's few, so they share
    # names, not paths).
    demo_feed_seed: int = 7

    @field_validator("home")
    @classmethod
    def _home_from_project_root(cls, home: Path) -> Path:
        home = home.expanduser()
        return (home if home.is_absolute() else REPO_ROOT / home).resolve()

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: object) -> object:
        return apply_profile(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_replication(self) -> Settings:
        if self.kafka_embedded and self.topic_replication_factor > self.kafka_nodes:
            raise ValueError(f"TICKCAST_TOPIC_REPLICATION_FACTOR={self.topic_replication_factor} needs as many Kafka "
                             f"nodes; the embedded cluster has TICKCAST_KAFKA_NODES={self.kafka_nodes}")
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(f"TICKCAST_TOPIC_MIN_INSYNC_REPLICAS={self.topic_min_insync_replicas} is more than the "
                             f"replication factor ({self.topic_replication_factor}): no write could be acknowledged")
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.mode != "local":
            self._refuse_open_kafka()
            self._refuse_open_doors()
            for name in ("twilio_auth_token", "sendgrid_api_key", "alerts_webhook_secret", "fred_api_key",
                         "news_api_key", "earnings_api_key", "dashboard_session_secret"):
                secret = getattr(self, name)
                if secret is not None and secret.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"TICKCAST_{name.upper()} is a placeholder; set a real secret outside local mode")
            self._refuse_placeholder_passwords_in_addresses()
        return self

    def _refuse_placeholder_passwords_in_addresses(self) -> None:
        """A database or Redis address may carry its password (``scheme://user:pass@host``, or
        Feast's ``host:port,password=...``): a placeholder there is as open as anywhere else."""
        from urllib.parse import unquote, urlsplit

        def password_of(name: str) -> str | None:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not text:
                return None
            if name == "feast_redis_connection":
                options = dict(part.split("=", 1) for part in text.split(",")[1:] if "=" in part)
                return options.get("password")
            try:
                password = urlsplit(text).password
            except ValueError:
                return None
            return None if password is None else unquote(password)

        for name in ("alerts_database_url", "api_keys_database_url", "airflow_database_url", "predictions_redis_url",
                     "api_rate_limit_storage", "feast_redis_connection", "mlflow_tracking_password"):
            password = (self._secret(name) or None) if name == "mlflow_tracking_password" else password_of(name)
            if password is not None and password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"TICKCAST_{name.upper()} carries a placeholder password; set a real secret "
                                 "outside local mode")

    def _refuse_open_kafka(self) -> None:
        """Outside local mode no Kafka client is anonymous, none logs in with a placeholder, and
        nothing crosses the network in clear text."""
        if self.kafka_embedded and not self.kafka_embedded_auth:
            raise ValueError("TICKCAST_KAFKA_EMBEDDED_AUTH=false runs the embedded broker without authentication "
                             "(PLAINTEXT, every local process may read and write every topic); outside local mode "
                             "it must authenticate its clients")
        if self.kafka_uses_embedded_auth:
            return  # SCRAM with generated passwords, on a listener bound to 127.0.0.1
        protocol = self.kafka_security_protocol.upper()
        if protocol == "PLAINTEXT":
            raise ValueError("TICKCAST_KAFKA_SECURITY_PROTOCOL=PLAINTEXT authenticates no client; outside local "
                             "mode use SASL_SSL, SSL, or SASL_PLAINTEXT to a broker on loopback")
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_mechanism or not self.kafka_sasl_username:
                raise ValueError(f"TICKCAST_KAFKA_SECURITY_PROTOCOL={protocol} needs TICKCAST_KAFKA_SASL_MECHANISM "
                                 "and TICKCAST_KAFKA_SASL_USERNAME")
            if self._secret("kafka_sasl_password").lower() in PLACEHOLDER_SECRETS:
                raise ValueError("TICKCAST_KAFKA_SASL_PASSWORD is a placeholder; set a real secret outside local mode")
        if protocol not in ("SSL", "SASL_SSL"):
            remote = [host for host, _ in self.kafka_bootstrap_hosts if not is_loopback(host)]
            if remote:
                raise ValueError(f"TICKCAST_KAFKA_BOOTSTRAP_SERVERS names {', '.join(remote)}, off loopback, reached "
                                 f"with {protocol}: passwords and data would cross the network in clear text; "
                                 "use SASL_SSL or SSL")

    def _secret(self, name: str) -> str:
        secret = getattr(self, name)
        return secret.get_secret_value() if secret is not None else ""

    def _refuse_open_doors(self) -> None:
        """Production refuses what is only acceptable on a developer's own machine."""
        if not self.api_auth_enabled:
            raise ValueError("TICKCAST_API_AUTH_ENABLED=false is for a private local sandbox; "
                             "outside local mode every data route needs an API key")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("set both TICKCAST_TLS_CERTFILE and TICKCAST_TLS_KEYFILE, or neither")
        for name in ("api_host", "dashboard_host"):
            if not is_loopback(getattr(self, name)) and not self.tls_certfile:
                raise ValueError(f"TICKCAST_{name.upper()}={getattr(self, name)} listens off loopback without TLS; "
                                 "set TICKCAST_TLS_CERTFILE and TICKCAST_TLS_KEYFILE, or bind 127.0.0.1 "
                                 "behind a TLS-terminating proxy")
        # MLflow's and Airflow's servers are started without TLS of their own: off loopback they
        # belong behind a proxy that terminates it.
        for name in ("mlflow_host", "airflow_host"):
            if not is_loopback(getattr(self, name)):
                raise ValueError(f"TICKCAST_{name.upper()}={getattr(self, name)} listens off loopback without TLS; "
                                 "bind 127.0.0.1 and put a TLS-terminating proxy in front")

    @property
    def home_dir(self) -> Path:
        return self.home

    @property
    def dashboard_dir(self) -> Path:
        """The dashboard's own state: the session secret (local mode) and saved watchlists."""
        return self.home_dir / "dashboard"

    @property
    def dashboard_hosts(self) -> list[str]:
        return [h.strip() for h in self.dashboard_allowed_hosts.split(",") if h.strip()]

    @property
    def checkpoint_dir(self) -> Path:
        return self.home_dir / "checkpoints"

    @property
    def run_dir(self) -> Path:
        """Pid files, sockets, progress snapshots."""
        return self.home_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.home_dir / "logs"

    @property
    def online_store_path(self) -> Path:
        return self.home_dir / "online" / "predictions.sqlite"

    @property
    def alerts_db_url(self) -> str:
        if self.alerts_database_url:
            return self.alerts_database_url
        if self.postgres_embedded:
            return self.postgres_url("alerts")
        return f"sqlite:///{self.home_dir / 'alerts' / 'alerts.sqlite'}"

    @property
    def postgres_data_dir(self) -> Path:
        return self.home_dir / "postgres"

    @property
    def postgres_socket_dir(self) -> Path:
        """The embedded PostgreSQL's socket directory (mode 0700): under the run directory, or
        under /tmp when that path would pass the 107 bytes a unix socket's path may have."""
        socket_dir = self.run_dir / "postgres"
        if len(str(socket_dir / f".s.PGSQL.{self.postgres_port}.lock")) > 100:
            import hashlib

            digest = hashlib.sha1(str(self.home_dir).encode()).hexdigest()[:16]
            socket_dir = Path("/tmp") / f"tickcast-pg-{digest}"
        return socket_dir

    # The embedded server's one role, a superuser that owns every database.
    POSTGRES_USER: ClassVar[str] = "tickcast"
    # Each database of the embedded server, by its user (mlflow_auth: the MLflow server's users).
    POSTGRES_DATABASES: ClassVar[tuple[str, ...]] = ("mlflow", "mlflow_auth", "alerts", "airflow", "auth")

    def postgres_url(self, database: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``database`` on the embedded PostgreSQL (over its unix socket)."""
        return (f"postgresql+{driver}://{self.POSTGRES_USER}@/{database}"
                f"?host={self.postgres_socket_dir}&port={self.postgres_port}")

    @property
    def redis_password_path(self) -> Path:
        """The embedded Redis's password (mode 0600), generated at setup."""
        return self.home_dir / "auth" / "redis_password"

    @property
    def embedded_redis_password(self) -> str:
        """The embedded Redis's password, read from redis_password_path."""
        return self.redis_password_path.read_text().strip()

    def embedded_redis_url(self, db: int = 0) -> str:
        """redis:// URL of the embedded Redis, database ``db``. Reads the password file."""
        from urllib.parse import quote

        password = self.embedded_redis_password
        return f"redis://:{quote(password, safe='')}@127.0.0.1:{self.redis_port}/{db}"

    @property
    def feast_redis_connection_string(self) -> str:
        """Feast's Redis connection string: the setting, else the embedded Redis (database 0)."""
        if self.feast_redis_connection:
            return self.feast_redis_connection
        if self.redis_embedded:
            return f"127.0.0.1:{self.redis_port},db=0,password={self.embedded_redis_password}"
        return "127.0.0.1:6379"

    @property
    def rate_limit_storage_uri(self) -> str:
        """The API's rate-limit counters: the setting, else the embedded Redis (database 1), else memory://."""
        if self.api_rate_limit_storage:
            return self.api_rate_limit_storage
        return self.embedded_redis_url(1) if self.redis_embedded else "memory://"

    @property
    def predictions_redis(self) -> str:
        """The Redis of the latest predictions (predictions_store=redis): the setting, else the embedded one (database 2)."""
        if self.predictions_redis_url is not None:
            return self.predictions_redis_url.get_secret_value()
        return self.embedded_redis_url(2)

    @property
    def kafka_node_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each embedded Kafka node."""
        return [(kafka_node_port(self.kafka_broker_port, i), kafka_node_port(self.kafka_controller_port, i))
                for i in range(self.kafka_nodes)]

    @property
    def alerts_link_base(self) -> str:
        return self.alerts_dashboard_url or self.dashboard_url

    @property
    def prometheus_base_url(self) -> str:
        """Where Prometheus answers: the operator's (``prometheus_url``) or the platform's, on loopback."""
        if self.prometheus_url:
            return self.prometheus_url.rstrip("/")
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def http_scheme(self) -> str:
        """How the API and the dashboard are reached: https once a certificate is configured."""
        return "https" if self.tls_certfile else "http"

    @property
    def api_url(self) -> str:
        """Where a client on this machine reaches the API (a wildcard bind via loopback)."""
        return f"{self.http_scheme}://{client_host(self.api_host)}:{self.api_port}"

    @property
    def dashboard_url(self) -> str:
        return f"{self.http_scheme}://{client_host(self.dashboard_host)}:{self.dashboard_port}"

    @property
    def api_keys_path(self) -> Path:
        """API keys (SHA-256 hashes only) and their scopes, in SQLite: ``api_keys_db_url`` unless
        that names PostgreSQL."""
        return self.home_dir / "auth" / "api_keys.sqlite"

    @property
    def api_keys_db_url(self) -> str:
        """Where the API keys are: the embedded PostgreSQL's ``auth`` database, else the SQLite file."""
        if self.api_keys_database_url:
            return self.api_keys_database_url.get_secret_value()
        if self.postgres_embedded:
            return self.postgres_url("auth")
        return f"sqlite:///{self.api_keys_path}"

    @property
    def dashboard_users_path(self) -> Path:
        """The dashboard's users (argon2 password hashes only)."""
        return self.home_dir / "auth" / "dashboard_users.sqlite"

    @property
    def dashboard_admin_password_file(self) -> Path:
        """The first user's generated password (mode 0600), written when there is no user yet."""
        return self.home_dir / "auth" / "dashboard_admin_password"

    @property
    def models_cache_dir(self) -> Path:
        """Registered model bundles downloaded from MLflow, one directory per version."""
        return self.home_dir / "models"

    @property
    def gx_dir(self) -> Path:
        """Great Expectations project: stored validation results and data docs."""
        return self.home_dir / "gx"

    @property
    def corporate_actions_inbox(self) -> Path:
        """Where corporate-action files are dropped for the `corporate_actions` DAG to apply."""
        return self.home_dir / "inbox" / "corporate_actions"

    @property
    def retrain_config_path(self) -> Path:
        path = Path(self.retrain_config).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    @property
    def alt_data_inbox(self) -> Path:
        """Drop folder of the file sources of alternative data: one folder per kind."""
        return self.home_dir / "inbox" / "alt_data"

    @property
    def airflow_dir(self) -> Path:
        """AIRFLOW_HOME: Airflow's configuration, metadata database, logs and admin password."""
        return self.home_dir / "airflow"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.home_dir / "feast"

    @property
    def mlflow_dir(self) -> Path:
        """Local MLflow store: the SQLite database and the artifacts."""
        return self.home_dir / "mlflow"

    @property
    def mlflow_backend_uri(self) -> str:
        if self.postgres_embedded:
            return self.postgres_url("mlflow")
        return f"sqlite:///{self.mlflow_dir}/mlflow.db"

    @property
    def mlflow_artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or self.mlflow_backend_uri

    @property
    def broker_jars_dir(self) -> Path:
        return self.jars_dir / "broker"

    @property
    def spark_jars_dir(self) -> Path:
        return self.jars_dir / "spark"

    @property
    def kafka_credentials_path(self) -> Path:
        """The embedded broker's principals and their passwords (JSON, mode 0600)."""
        return self.home_dir / "auth" / "kafka_credentials.json"

    @property
    def kafka_bootstrap_hosts(self) -> list[tuple[str, int | None]]:
        """(host, port) of each bootstrap address."""
        found: list[tuple[str, int | None]] = []
        for entry in self.kafka_bootstrap_servers.split(","):
            address = entry.strip().rsplit("://", 1)[-1]
            if not address:
                continue
            host, sep, port = address.rpartition(":")
            if not sep or not port.isdigit() or (":" in host and not host.startswith("[")):
                found.append((address, None))  # no port, or a bare IPv6 address
            else:
                found.append((host, int(port)))
        return found

    @property
    def kafka_uses_embedded_auth(self) -> bool:
        """Whether clients log in to the embedded broker with per-role credentials: it runs with
        authentication and the bootstrap names it (its loopback port). Any other bootstrap is an
        external cluster, reached with kafka_security_protocol and kafka_sasl_*."""
        hosts = self.kafka_bootstrap_hosts
        client_ports = {port for port, _ in self.kafka_node_ports}
        return (self.kafka_embedded and self.kafka_embedded_auth and bool(hosts)
                and all(is_loopback(host) and port in client_ports for host, port in hosts))

    def _kafka_login(self, role: KafkaRole) -> tuple[str, str, str, str] | None:
        """(protocol, mechanism, user, password) of ``role``; None for a connection without SASL."""
        if self.kafka_uses_embedded_auth:
            return ("SASL_PLAINTEXT", kafka_auth.SCRAM_MECHANISM, role,
                    kafka_auth.read_password(self.kafka_credentials_path, role))
        if self.kafka_sasl_mechanism:
            return (self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username or "",
                    self._secret("kafka_sasl_password"))
        return None

    def kafka_client_config(self, role: KafkaRole) -> dict[str, str | int | float | bool]:
        """librdkafka configuration of producers, consumers and admin clients of ``role`` (the
        principal whose ACLs apply on the embedded broker; an external cluster's one principal
        serves every role). Reads the role's password from kafka_credentials_path."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        login = self._kafka_login(role)
        if login is not None:
            config["security.protocol"], config["sasl.mechanism"], config["sasl.username"], \
                config["sasl.password"] = login
        return config

    def spark_kafka_options(self, role: KafkaRole) -> dict[str, str]:
        """The same connection, spelled for Spark's Kafka source."""
        options = {
            "kafka.bootstrap.servers": self.kafka_bootstrap_servers,
            "kafka.security.protocol": self.kafka_security_protocol,
            # A partition's leader gone (its node killed, then fenced): Spark's admin client asks
            # the leader it cached until default.api.timeout.ms (60 s) passes (KAFKA-20673, fixed
            # after the kafka-clients Spark ships); bounded lower, Spark retries the offsets
            # lookup with a new client, which finds the new leader. The admin client needs the
            # request timeout no longer than that.
            "kafka.request.timeout.ms": "10000",
            "kafka.default.api.timeout.ms": "15000",
        }
        login = self._kafka_login(role)
        if login is not None:
            protocol, mechanism, user, password = login
            options["kafka.security.protocol"] = protocol
            options["kafka.sasl.mechanism"] = mechanism
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            # Spark redacts sasl.jaas.config in what it logs (KafkaRedactionUtil).
            options["kafka.sasl.jaas.config"] = f'{module} required username="{user}" password="{password}";'
        return options


def client_host(host: str) -> str:
    """Where a client reaches a server bound to ``host`` (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) only this machine can reach."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost may resolve anywhere
        return False


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, ``invalid setting TICKCAST_<NAME>: why``."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def load_settings(**overrides: object) -> Settings:
    """The settings of this process: the environment, the project's ``.env``, then ``overrides``."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = "_".join(str(p) for p in error.get("loc", ())).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"invalid setting TICKCAST_{field}: {message}" if field else f"invalid settings: {message}")
        raise SettingsError(problems) from None
