"""The models that score: registered versions from MLflow, paired into a dual model.

A prediction needs both architectures of one interval (``tickcast-lstm-<interval>`` and
``tickcast-transformer-<interval>``). Their registered versions are downloaded once into
``$TICKCAST_HOME/models/<name>/<version>`` and opened with ONNX Runtime, each only once its
files match the content hash recorded on the version at registration (a cached copy that does
not is discarded and downloaded again; a download that does not is refused). ``ChampionWatcher``
asks the registry at most every ``scorer_reload_seconds`` whether ``champion`` moved and
swaps the pair without a restart; a version that fails to load leaves the old pair serving,
and says so as a pipeline event, as it does whenever the scorer serves the baseline. The live
scorer runs its checks on a thread of their own (``background``): a registry that accepts and
never answers holds that thread (each request bounded by ``mlflow_http_timeout_seconds``), never
the scoring loop, and is reported as ``model_registry_unavailable``.
"""

from __future__ import annotations

import errno
import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tickcast.core.intervals import horizon_label
from tickcast.models.networks import ARCHITECTURES
from tickcast.models.registry import CHALLENGER, CHAMPION, RegistryError, pair_label, registered_name
from tickcast.scoring.routes import EarningsCalendar

if TYPE_CHECKING:
    from collections.abc import Callable

    from tickcast.core.events import PipelineEvent
    from tickcast.core.settings import Settings
    from tickcast.models.bundle import ModelBundle

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class DeployedModel:
    name: str
    version: str
    bundle: ModelBundle


@dataclass(frozen=True)
class DualModel:
    """The LSTM and the Transformer that score together (dual-model confirmation)."""

    lstm: DeployedModel
    transformer: DeployedModel
    threshold: float
    horizon: str
    # Decides each bar's route when the bundles serve more than the normal one (earnings days).
    calendar: EarningsCalendar | None = None

    def routes(self, symbols, data_timestamps) -> np.ndarray | None:
        """Each row's route, or None when the models have no route but the normal one."""
        if self.calendar is None or not (self.lstm.bundle.routes or self.transformer.bundle.routes):
            return None
        return self.calendar.routes(symbols, data_timestamps)

    @property
    def model_name(self) -> str:
        return pair_label(self.lstm.name, self.transformer.name)

    @property
    def model_version(self) -> str:
        return pair_label(self.lstm.version, self.transformer.version)

    @property
    def features(self) -> list[str]:
        return self.lstm.bundle.features

    @property
    def sequence_length(self) -> int:
        return self.lstm.bundle.sequence_length

    @property
    def bundles(self) -> tuple[ModelBundle, ModelBundle]:
        return self.lstm.bundle, self.transformer.bundle


def pair(lstm: DeployedModel, transformer: DeployedModel, calendar: EarningsCalendar | None = None) -> DualModel:
    """Two versions that can score together: same features, order and sequence length."""
    from tickcast.models.experiment import load_config

    a, b = lstm.bundle, transformer.bundle
    if a.features != b.features or a.sequence_length != b.sequence_length:
        raise RegistryError(
            f"{lstm.name} v{lstm.version} and {transformer.name} v{transformer.version} do not take the same "
            f"input ({len(a.features)} vs {len(b.features)} features, sequences of {a.sequence_length} vs "
            f"{b.sequence_length}); train both from one experiment"
        )
    config = load_config(a.directory / "config.yaml")
    return DualModel(lstm, transformer, threshold=config.confirmation.threshold,
                     horizon=horizon_label(config.interval, config.labels.horizon), calendar=calendar)


def _discard(directory: Path) -> None:
    """Out of the cache at once (renamed, so no reader opens it meanwhile), then deleted."""
    doomed = directory.with_name(f".{directory.name}-discarded-{secrets.token_hex(4)}")
    try:
        directory.rename(doomed)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(doomed, ignore_errors=True)


# What MLflow answers for a model that does not exist, and for an alias a model does not have.
ALIAS_MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


class ModelLoader:
    """Registered versions, downloaded once and opened once per process."""

    def __init__(self, settings: Settings, threads: int | None = None):
        self.settings = settings
        self.threads = threads
        self._opened: dict[tuple[str, str], DeployedModel] = {}
        self._lock = threading.Lock()
        self._client = None
        self.calendar = EarningsCalendar(settings)
        # Versions registered without a content hash that were warned about (once each).
        self._unverified: set[tuple[str, str]] = set()

    def client(self):
        if self._client is None:
            from tickcast.models import registry, tracking

            tracking.configure_mlflow(self.settings)
            self._client = registry.client()
        return self._client

    def version_of(self, name: str, ref: str) -> str | None:
        """The version an alias (``champion``) or number points at; None if there is none."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            # MLflow 3 returns version numbers as int; prediction labels and caches use str.
            if ref.isdigit():
                return str(client.get_model_version(name, ref).version)
            return str(client.get_model_version_by_alias(name, ref).version)
        except MlflowException as exc:
            # No such model, version or alias: None. Anything else (the tracking server down or
            # not answering, which mlflow raises as MlflowException too) is no answer at all: a
            # registry that cannot be asked must not read as one without a champion.
            if exc.error_code in ALIAS_MISSING:
                return None
            raise

    def load(self, name: str, version: str) -> DeployedModel:
        key = (name, str(version))
        with self._lock:
            if key in self._opened:
                return self._opened[key]
        from tickcast.models.bundle import ModelBundle

        directory = self._fetch(name, str(version))
        deployed = DeployedModel(name, str(version), ModelBundle(directory, threads=self.threads))
        with self._lock:
            self._opened[key] = deployed
        log.info("loaded %s version %s (%s)", name, version, ", ".join(deployed.bundle.active_providers))
        return deployed

    def _fetch(self, name: str, version: str) -> Path:
        """The version's bundle in the cache, its files checked against the content hash its
        registration recorded: a cached copy that differs is discarded and downloaded again;
        a download that differs raises ``BundleIntegrityError``."""
        from tickcast.models.bundle import MANIFEST, bundle_digest
        from tickcast.models.registry import DIGEST_TAG

        registered = self.client().get_model_version(name, version)
        expected = (registered.tags or {}).get(DIGEST_TAG)
        if expected is None and (name, version) not in self._unverified:
            self._unverified.add((name, version))
            log.warning("%s version %s was registered without a content hash (before bundles were "
                        "verified): it is loaded unverified; register it again to have it checked", name, version)
        target = self.settings.models_cache_dir / name / version
        if (target / MANIFEST).is_file():
            if expected is None or bundle_digest(target) == expected:
                return target
            log.warning("the cached bundle of %s version %s does not match its registered content hash; "
                        "discarding it and downloading the version again", name, version)
            _discard(target)
        elif target.exists():  # not a bundle (a copy left half made): nothing to trust in it
            _discard(target)
        return self._download(name, version, registered.source, expected)

    def _download(self, name: str, version: str, source: str, expected: str | None) -> Path:
        import mlflow

        from tickcast.models.bundle import MANIFEST, BundleIntegrityError, bundle_digest

        target = self.settings.models_cache_dir / name / version
        target.parent.mkdir(parents=True, exist_ok=True)
        # Download beside the target, check, and rename: a reader never sees half a bundle, and
        # the cache never holds one that failed its check.
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging))
            inner = [p for p in staging.iterdir()]
            root = inner[0] if len(inner) == 1 and inner[0].is_dir() else staging
            if expected is not None and (found := bundle_digest(root)) != expected:
                raise BundleIntegrityError(
                    f"{name} version {version} is not the bundle that was registered: its artifacts "
                    f"({source}) hash to {found[:16]}..., the version recorded {expected[:16]}...; refusing "
                    "to load it (register a new version from a trusted run)")
            root.rename(target)
        except OSError as exc:
            # Another process finished the same download first (a directory renamed onto a
            # non-empty one fails with ENOTEMPTY, onto a file with EEXIST): use its copy.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (target / MANIFEST).is_file():
                raise
            if expected is not None and bundle_digest(target) != expected:
                raise BundleIntegrityError(
                    f"{name} version {version}: the copy in {target} does not match the registered content hash"
                ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def dual(self, interval: str, lstm: str = CHAMPION, transformer: str = CHAMPION) -> DualModel | None:
        """The pair at these aliases or version numbers; None when either has no such version."""
        versions = {}
        for arch, ref in (("lstm", lstm), ("transformer", transformer)):
            name = registered_name(arch, interval)
            found = self.version_of(name, str(ref))
            if found is None:
                return None
            versions[arch] = (name, found)
        return pair(self.load(*versions["lstm"]), self.load(*versions["transformer"]), self.calendar)

    def aliases(self, interval: str) -> dict[str, dict[str, object]]:
        """Champion and challenger of each architecture: version, tags (metrics among them)."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        out: dict[str, dict[str, object]] = {}
        for arch in ARCHITECTURES:
            name = registered_name(arch, interval)
            for alias in (CHAMPION, CHALLENGER):
                try:
                    version = client.get_model_version_by_alias(name, alias)
                except MlflowException as exc:
                    # No such model, or no such alias on it: nothing registered there. Anything
                    # else (the tracking server down) is the registry failing, not an answer.
                    if exc.error_code in ALIAS_MISSING:
                        continue
                    raise
                out.setdefault(name, {})[alias] = version
        return out


class ChampionWatcher:
    """The current champion pair, re-checked at most every ``interval_seconds``.

    ``current()`` is cheap between checks; a check costs two registry lookups, and a new
    champion is downloaded and opened before it replaces the old one.

    Never silent about what it serves instead of the champion: at every check that leaves it
    without one it reports ``scorer_baseline`` (warning while no champion is registered,
    critical when one is and cannot be loaded), and while a new champion cannot be loaded over
    a previous one that serves on, ``model_load_failed``; while the registry cannot be asked
    (down, or a check left unanswered for ``stall_seconds``), ``model_registry_unavailable``; each
    is resolved once it has passed.

    With ``background``, a due check runs on a thread of its own and ``current()`` answers at
    once with the pair held (the previous champion, or None for the baseline): the live scorer's
    loop never waits on the registry. Without it, ``current()`` checks inline (one-off callers).
    """

    def __init__(self, loader: ModelLoader, interval: str, check_seconds: float,
                 report: Callable[[PipelineEvent], None] | None = None, background: bool = False,
                 stall_seconds: float | None = None):
        self.loader = loader
        self.interval = interval
        self.check_seconds = check_seconds
        # Where the watcher says that it serves the baseline, that a new champion could not be
        # loaded, and that a new champion took over (the alert engine's pipeline events).
        self.report = report
        self.background = background
        # A check waiting this long for the registry's answer is reported (the registry not
        # answering) before mlflow's own bounds (timeout x attempts, with backoff) end it.
        self.stall_seconds = (loader.settings.mlflow_http_timeout_seconds if stall_seconds is None
                              else stall_seconds)
        self._current: DualModel | None = None
        self._checked = -float("inf")
        self._lock = threading.Lock()
        # Held while the served pair and the reported state change together, so a report from
        # the scoring loop (a stalled check) and one from the check's thread keep their order.
        self._state = threading.RLock()
        self._checking: threading.Thread | None = None
        # Since when the running check waits for the registry's answer (not while it imports
        # mlflow or downloads a bundle); None when it does not.
        self._asking_since: float | None = None
        self._stall_reported = False
        self._on_baseline = False
        self._baseline_severity: str | None = None
        self._load_failing = False
        self._registry_down = False

    def current(self) -> DualModel | None:
        if time.monotonic() - self._checked >= self.check_seconds:
            if self.background:
                self._check_in_background()
            else:
                self.refresh()
        if self.background:
            self._report_stall()
        return self._current

    def start(self) -> DualModel | None:
        """The first check, waited for unless the registry leaves it unanswered for
        ``stall_seconds``: then scoring starts with what there is (the baseline), and says so
        while the check goes on."""
        if not self.background:
            return self.refresh()
        check = self._check_in_background()
        while check.is_alive() and not self._stalled():
            check.join(0.05)
        self._report_stall()
        return self._current

    def _stalled(self) -> bool:
        asking = self._asking_since
        return asking is not None and time.monotonic() - asking >= self.stall_seconds

    def _check_in_background(self) -> threading.Thread:
        if self._checking is None or not self._checking.is_alive():
            # Not started again at every call while it runs; refresh() stamps it again.
            self._checked = time.monotonic()
            self._stall_reported = False
            self._checking = threading.Thread(target=self._refresh_on_thread, name="champion-check", daemon=True)
            self._checking.start()
        return self._checking

    def _refresh_on_thread(self) -> None:
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - a failed check must not end the checks; the next one runs
            log.exception("the champion check failed; trying again at the next check")

    def _report_stall(self) -> None:
        check = self._checking
        if check is None or self._stall_reported or not check.is_alive() or not self._stalled():
            return
        waited = time.monotonic() - (self._asking_since or 0.0)
        with self._state:
            if not check.is_alive():  # it finished meanwhile, and reported its own outcome
                return
            self._stall_reported = True
            self._registry_unavailable(f"the model registry has not answered the champion check for {waited:.0f}s")
            if self._current is None:
                self._baseline(f"the model registry has not answered the champion check for {waited:.0f}s; "
                               "serving the momentum baseline until it does")

    def refresh(self) -> DualModel | None:
        with self._lock:
            self._checked = time.monotonic()
            now = self._current
            try:
                self.loader.client()  # mlflow imported and configured before the wait is timed
                self._asking_since = time.monotonic()
                wanted = tuple(
                    self.loader.version_of(registered_name(arch, self.interval), CHAMPION)
                    for arch in ARCHITECTURES
                )
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not stop scoring
                log.warning("could not check the champion models (%s); keeping the current ones", exc)
                with self._state:
                    self._registry_unavailable(f"the model registry could not be asked for the champion ({exc})")
                    if now is None:
                        self._baseline(f"the champion models could not be loaded ({exc}); serving the momentum "
                                       "baseline")
                return now
            finally:
                self._asking_since = None
            self._registry_answered()
            if None in wanted:
                if now is not None:
                    log.warning("champion alias gone for %s models; keeping %s v%s", self.interval,
                                now.model_name, now.model_version)
                else:
                    self._baseline(f"no champion is registered for the {self.interval} models; serving the "
                                   "momentum baseline until one is promoted", severity="warning")
                self._load_recovered()
                return now
            if now is not None and (now.lstm.version, now.transformer.version) == wanted:
                self._load_recovered()
                return now
            lstm_version, transformer_version = wanted
            assert lstm_version is not None and transformer_version is not None
            try:
                fresh = self.loader.dual(self.interval, lstm_version, transformer_version)
            except Exception as exc:  # noqa: BLE001 - a bad version must not stop scoring
                self._load_failed(pair_label(lstm_version, transformer_version), exc)
                return now
            if fresh is None:  # the version went away between the two lookups
                return now
            with self._state:
                self._current = fresh
                log.info("scoring with %s version %s", fresh.model_name, fresh.model_version)
                self._load_recovered()
                if self._on_baseline:
                    self._on_baseline = False
                    self._event("scorer_baseline", "resolved", "warning",
                                f"scoring with {fresh.model_name} version {fresh.model_version} again")
            if now is not None:
                message = (f"champion {fresh.model_name} version {fresh.model_version} replaces version "
                           f"{now.model_version}")
                older = any(int(new) < int(old) for new, old in (
                    (fresh.lstm.version, now.lstm.version), (fresh.transformer.version, now.transformer.version)))
                kind = "model_rolled_back" if older else "model_promoted"
                # A moment, not a state: the incident opens and closes at once.
                self._event(kind, "firing", "warning" if older else "info", message)
                self._event(kind, "resolved", "warning" if older else "info", message)
            return fresh

    def _baseline(self, message: str, severity: str = "critical") -> None:
        """No champion serves: the momentum baseline does, and the alert engine hears of it (at
        every check, so it hears after a restart of either side; the log says it once)."""
        with self._state:
            said = self._on_baseline and self._baseline_severity == severity
            log.log(logging.DEBUG if said else logging.WARNING, "%s", message)
            self._on_baseline, self._baseline_severity = True, severity
            self._event("scorer_baseline", "firing", severity, message)

    def _registry_unavailable(self, message: str) -> None:
        """Reported at every failed (or stalled) check: the pair held serves on meanwhile."""
        with self._state:
            if not self._registry_down:
                log.warning("%s; a promotion is not seen until it answers", message)
            self._registry_down = True
            now = self._current
            serving = (f"serving {now.model_name} version {now.model_version} meanwhile" if now is not None
                       else "serving the momentum baseline meanwhile")
            self._event("model_registry_unavailable", "firing", "warning", f"{message}; {serving}")

    def _registry_answered(self) -> None:
        with self._state:
            if self._registry_down:
                self._registry_down = False
                log.info("the model registry answers the champion check again")
                self._event("model_registry_unavailable", "resolved", "warning",
                            "the model registry answers the champion check again")

    def _load_failed(self, versions: str, exc: Exception) -> None:
        from tickcast.models.bundle import BundleIntegrityError

        names = pair_label(*(registered_name(arch, self.interval) for arch in ARCHITECTURES))
        now = self._current
        if now is None:
            self._baseline(f"the champion models could not be loaded ({names} version {versions}: {exc}); "
                           "serving the momentum baseline")
            return
        message = (f"champion {names} version {versions} could not be loaded ({exc}); still serving "
                   f"version {now.model_version}")
        log.warning("%s; keeping the current ones", message)
        self._load_failing = True
        # A bundle that is not what was registered is tampering or corruption, not a hiccup.
        severity = "critical" if isinstance(exc, BundleIntegrityError) else "warning"
        self._event("model_load_failed", "firing", severity, message)

    def _load_recovered(self) -> None:
        if self._load_failing:
            self._load_failing = False
            now = self._current
            self._event("model_load_failed", "resolved", "warning",
                        f"serving the champion {now.model_name} version {now.model_version}" if now is not None
                        else "no new champion to load")

    def _event(self, kind: str, status: str, severity: str, message: str) -> None:
        if self.report is None:
            return
        from tickcast.core.events import PipelineEvent

        self.report(PipelineEvent.reported(kind, f"scorer:{self.interval}", status, message, severity=severity))
