"""Untrained model bundles: real ONNX files in the real layout, with random weights.

For tests and benchmarks of everything that serves models (scoring, the API, the live
scorer): their predictions mean nothing, but they load, score and register like trained ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.models.networks import ARCHITECTURES

if TYPE_CHECKING:
    from tickcast.core.settings import Settings


def quick_bundles(directory: Path, *, features: list[str], sequence_length: int = 4, interval: str = "1d",
                  children: tuple[str, ...] = (), seed: int = 0, lstm: dict | None = None,
                  transformer: dict | None = None) -> dict[str, Path]:
    """An untrained LSTM and Transformer bundle (random weights, identity scaler; small unless
    ``lstm``/``transformer`` give an experiment's architecture kwargs).

    Real ONNX files with the real layout, for tests and benchmarks of everything that
    serves models; their predictions mean nothing.
    """
    import numpy as np

    from tickcast.models import networks, training
    from tickcast.models.bundle import write_bundle
    from tickcast.models.dataset import Scaler
    from tickcast.models.experiment import ExperimentConfig

    config = ExperimentConfig(
        name="quick", interval=interval, symbols=list(children) or ["AAA"], start="2020-01-01",
        end="2021-01-01", features=features, training={"sequence_length": sequence_length},
        lstm=lstm or {"units": 8}, transformer=transformer or {"units": 8, "ff_units": 16, "heads": 2},
    )
    scaler = Scaler(list(features), np.zeros(len(features)), np.ones(len(features)))
    training.seed_everything(seed)
    out: dict[str, Path] = {}
    for arch in ARCHITECTURES:
        kwargs = getattr(config, arch).model_dump()
        build = networks.BUILDERS[arch]
        parent = build(sequence_length, len(features), return_scale=0.01, **kwargs)
        kids = {symbol: build(sequence_length, len(features), return_scale=0.02, **kwargs) for symbol in children}
        probe = np.zeros((1, sequence_length, len(features)), dtype=np.float32)
        for model in (parent, *kids.values()):
            model(probe)  # Keras exports only a model that has been called once
        out[arch] = write_bundle(Path(directory) / arch, arch=arch, config=config, scaler=scaler,
                                 parent=parent, children=kids)
    return out


def register_bundles(settings: Settings, bundles: dict[str, Path], *, interval: str = "1d",
                     champion: bool = True, metrics: dict[str, float] | None = None) -> dict[str, str]:
    """Log bundles to MLflow as one run and register a version of each (challenger, and
    champion too with ``champion``). Returns registered name -> version."""
    import mlflow

    from tickcast.models import registry, tracking
    from tickcast.models.bundle import bundle_digest

    tracking.configure_mlflow(settings)
    experiment = tracking.experiment(settings, "tickcast-test-bundles")
    client = registry.client()
    versions = {}
    with mlflow.start_run(experiment_id=experiment.experiment_id) as active:
        for arch, directory in bundles.items():
            mlflow.log_artifacts(str(directory), artifact_path=f"bundle_{arch}")
            name = registry.registered_name(arch, interval)
            tags = {"architecture": arch, "interval": interval, "variant": "child",
                    **{f"metric.{k}": str(v) for k, v in (metrics or {}).items()}}
            version = registry.register(client, name=name, source=f"{active.info.artifact_uri}/bundle_{arch}",
                                        run_id=active.info.run_id, tags=tags, digest=bundle_digest(directory))
            if champion:
                registry.make_champion(client, name, version.version, None)
            versions[name] = str(version.version)
    return versions
