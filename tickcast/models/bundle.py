"""A deployable model: the parent and its per-symbol children in ONNX, with what they need.

One bundle per architecture and training run, a directory that MLflow stores as the
registered version's artifacts::

    manifest.json      architecture, interval, features, feature-set version, sequence
                       length, label parameters, children, fold fingerprint
    scaler.json        the training rows' standardisation (applied before the network)
    config.yaml        the experiment that trained it
    parent.onnx        the network trained on the market index: scores symbols without a child
    children/SYM.onnx  one network per configured symbol, initialised from the parent
    earnings.onnx      with earnings-day routing: the network for bars in an earnings window
    keras/...          the same networks as Keras files (explanations, retraining)

ONNX Runtime runs them with the CUDA provider when one is available and the CPU otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tickcast.core.featureset import FEATURE_SET_VERSION
from tickcast.core.predictions import DEFAULT_ROUTE
from tickcast.models.dataset import Scaler
from tickcast.models.experiment import ExperimentConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class BundleError(RuntimeError):
    """A bundle directory that is missing parts or does not fit the input it is given."""


class BundleIntegrityError(BundleError):
    """A bundle whose files are not those its registered version recorded (a corrupt copy, or
    an artifact changed after registration): it is never loaded."""


def bundle_digest(directory: Path | str) -> str:
    """The bundle's content hash: SHA-256 over the lines ``<sha256 of a file>  <its path
    relative to the bundle>`` (sha256sum's format) sorted by path, so any changed, added,
    removed or renamed file changes it."""
    root = Path(directory)
    files: dict[str, str] = {}
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                files[path.relative_to(root).as_posix()] = hashlib.file_digest(fh, "sha256").hexdigest()
    listing = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def execution_providers(available: list[str] | None = None) -> list[str]:
    """CUDA first when this onnxruntime build and machine offer it, the CPU always."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    return [CUDA, CPU] if CUDA in available else [CPU]


def export_onnx(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras prints "Saved artifact at ..." for every export; our own log line says it once.
    # tf2onnx also probes numpy for the removed ``np.object`` (a FutureWarning): not ours to fix.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model.export(str(path), format="onnx")


def write_bundle(directory: Path, *, arch: str, config: ExperimentConfig, scaler: Scaler, parent: Any,
                 children: Mapping[str, Any], fingerprint: str | None = None, earnings: Any = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    export_onnx(parent, directory / "parent.onnx")
    (directory / "keras" / "children").mkdir(parents=True, exist_ok=True)
    parent.save(directory / "keras" / "parent.keras")
    child_files = {}
    for symbol, model in sorted(children.items()):
        export_onnx(model, directory / "children" / f"{symbol}.onnx")
        model.save(directory / "keras" / "children" / f"{symbol}.keras")
        child_files[symbol] = f"children/{symbol}.onnx"
    routes = {}
    if earnings is not None:
        export_onnx(earnings, directory / "earnings.onnx")
        earnings.save(directory / "keras" / "earnings.keras")
        routes["earnings"] = "earnings.onnx"
    scaler.save(directory / "scaler.json")
    (directory / "config.yaml").write_text(config.to_yaml())
    manifest = {
        "architecture": arch,
        "interval": config.interval,
        "index": config.index,
        "features": list(config.features),
        "feature_set_version": FEATURE_SET_VERSION,
        "sequence_length": config.training.sequence_length,
        "labels": config.labels.model_dump(),
        "outputs": {"direction": ["down", "neutral", "up"], "quantiles": ["p10", "p50", "p90"]},
        "parent": "parent.onnx",
        "children": child_files,
        "routes": routes,
        "transfer_strategy": config.transfer.strategy,
        "experiment": config.name,
        "folds_fingerprint": fingerprint,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("bundle: %s parent and %d child model(s) exported to ONNX in %s", arch, len(child_files), directory)
    return directory


@dataclass
class _Session:
    session: Any  # onnxruntime.InferenceSession
    input_name: str

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        direction, quantiles = self.session.run(None, {self.input_name: x})
        return direction, quantiles


class ModelBundle:
    """A loaded bundle: raw feature sequences in, probabilities and quantiles out."""

    def __init__(self, directory: Path | str, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{self.directory} is not a model bundle (no {MANIFEST})")
        self.manifest = json.loads(manifest_path.read_text())
        self.scaler = Scaler.load(self.directory / "scaler.json")
        self.features: list[str] = self.manifest["features"]
        self.sequence_length: int = int(self.manifest["sequence_length"])
        self.providers = providers or execution_providers()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        options.log_severity_level = 3  # CUDA-missing and similar notices are not errors here

        def open_session(relative: str) -> _Session:
            session = ort.InferenceSession(str(self.directory / relative), sess_options=options,
                                           providers=self.providers)
            return _Session(session, session.get_inputs()[0].name)

        self.parent = open_session(self.manifest["parent"])
        self.children = {sym: open_session(path) for sym, path in self.manifest["children"].items()}
        # Bundles written before routing have no routes: every bar is a normal day for them.
        self.routes = {route: open_session(path) for route, path in self.manifest.get("routes", {}).items()}
        self.active_providers = self.parent.session.get_providers()

    @property
    def architecture(self) -> str:
        return self.manifest["architecture"]

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """Scale raw feature sequences (n, L, F) exactly as in training."""
        raw = np.asarray(raw, dtype=float)
        expected = (self.sequence_length, len(self.features))
        if raw.ndim != 3 or raw.shape[1:] != expected:
            raise BundleError(f"expected sequences of shape (n, {expected[0]}, {expected[1]}), got {raw.shape}")
        return np.nan_to_num(self.scaler.transform(raw))

    def served_routes(self, routes) -> np.ndarray:
        """Which route serves each row: its own when this bundle has a network for it, else normal."""
        routes = np.asarray(routes, dtype=object)
        return np.where(np.isin(routes, list(self.routes)), routes, DEFAULT_ROUTE)

    def predict(self, symbols, raw: np.ndarray, routes=None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, 3), quantiles (n, 3)) for each row: the network of its route
        (``routes``, e.g. ``earnings``) when the bundle has one, else its symbol's child when it
        has one, else the parent; one batched call per network."""
        x = self.prepare(raw)
        symbols = np.asarray(symbols)
        probabilities = np.empty((x.shape[0], 3), dtype=np.float32)
        quantiles = np.empty((x.shape[0], 3), dtype=np.float32)
        routed = np.zeros(x.shape[0], dtype=bool)
        if routes is not None:
            served = self.served_routes(routes)
            for route, network in self.routes.items():
                mine = served == route
                if mine.any():
                    probabilities[mine], quantiles[mine] = network.run(x[mine])
                    routed |= mine
        for symbol, child in self.children.items():
            mine = (symbols == symbol) & ~routed
            if mine.any():
                probabilities[mine], quantiles[mine] = child.run(x[mine])
                routed |= mine
        rest = ~routed
        if rest.any():
            probabilities[rest], quantiles[rest] = self.parent.run(x[rest])
        return probabilities, quantiles
