"""Experiments as configuration files: what data, which features, which labels, which models.

A YAML file (``experiments/daily.yaml``, ``experiments/intraday.yaml``) is validated into
``ExperimentConfig`` and logged to MLflow, whole, before any training starts, so every
run can be repeated from what it recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tickcast.core.featureset import feature_names
from tickcast.core.intervals import IntervalName
from tickcast.models.labels import LabelSpec
from tickcast.models.networks import ARCHITECTURES, Architecture


class ExperimentError(ValueError):
    """A configuration that cannot describe an experiment (the message says why)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelConfig(_Strict):
    k: float = Field(1.0, gt=0, description="barrier width in standard deviations of the horizon move")
    horizon: int = Field(1, ge=1, description="vertical barrier, in bars")
    vol_window: int = Field(20, ge=2, description="bars of returns behind the volatility estimate")

    def spec(self) -> LabelSpec:
        return LabelSpec(k=self.k, horizon=self.horizon, vol_window=self.vol_window)


class ArchitectureConfig(_Strict):
    """Keyword arguments of one network builder (see ``tickcast.models.networks``)."""

    units: int = Field(32, ge=1)
    layers: int = Field(1, ge=1)
    heads: int = Field(2, ge=1, description="attention heads (transformer)")
    ff_units: int = Field(64, ge=1, description="feed-forward width (transformer)")
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(3e-3, gt=0)
    quantile_weight: float = Field(1.0, ge=0, description="weight of the pinball loss against cross-entropy")


class TrainingConfig(_Strict):
    sequence_length: int = Field(20, ge=1, description="bars of feature vectors per input sequence")
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(32, ge=1)
    patience: int = Field(6, ge=1, description="early stopping: epochs without validation improvement")
    validation_fraction: float = Field(0.2, gt=0, lt=1,
                                       description="share of each training span, at its end, used for early stopping")
    seed: int = 7


class TransferConfig(_Strict):
    strategy: Literal["freeze", "finetune"] = "finetune"
    child_epochs: int = Field(15, ge=1)
    child_learning_rate: float = Field(5e-4, gt=0)


class EvaluationConfig(_Strict):
    folds: int = Field(4, ge=1)
    min_train_fraction: float = Field(0.4, gt=0, lt=1, description="share of the span before the first test fold")
    embargo: int = Field(0, ge=0, description="bars dropped from training after the purge, on top of it")
    cost_bps: float = Field(5.0, ge=0, description="transaction cost per unit of turnover, in basis points")
    momentum_lookback: int = Field(5, ge=1, description="bars behind the momentum-sign baseline")
    models: list[Architecture] = list(ARCHITECTURES)
    variants: list[Literal["scratch", "parent", "child"]] = ["scratch", "parent", "child"]
    baselines: list[Literal["no_change", "momentum", "logistic", "lightgbm"]] = [
        "no_change", "momentum", "logistic", "lightgbm"]
    fold_features: list[str] | None = Field(
        None, description="the features whose rows form the folds (default: the experiment's); promotion "
                          "sets the challenger's when it evaluates a champion with other features again")


class PromotionConfig(_Strict):
    metric: Literal["ic", "rank_ic", "macro_f1", "accuracy", "sharpe"] = "ic"
    margin: float = Field(0.005, ge=0, description="how much a challenger must beat the champion by")


class ConfirmationConfig(_Strict):
    threshold: float = Field(0.4, ge=0, le=1, description="both models' probability of the direction above this")


class RoutingConfig(_Strict):
    """Earnings-day routing: rows in a stock's earnings window (the ``earnings_window`` feature's
    rule, from the ``alt_earnings`` calendar) go to a model of their own, fine-tuned from the
    parent on the training rows of earnings days of every symbol; the other rows to the children."""

    earnings: bool = False
    epochs: int = Field(30, ge=1)
    learning_rate: float = Field(3e-3, gt=0)


class DemoMarketConfig(_Strict):
    """A synthetic market (``tickcast.feeds.history``) the experiment trains on when the platform
    runs its demo and the symbols have no stored bars: the demo feed's universe, with a planted
    signal a model can honestly find."""

    bars: int = Field(900, ge=100, le=20_000)
    alpha: float = Field(0.15, ge=0, lt=1)
    seed: int = 11
    start: str = "2022-01-03"
    earnings_every: int | None = Field(
        None, ge=5, description="bars between a stock's reports; its earnings days reverse the planted echo")


class ExperimentConfig(_Strict):
    name: str = Field(..., min_length=1)
    description: str = ""
    interval: IntervalName = "1d"
    symbols: list[str] = Field(..., min_length=1)
    index: str = "MKT"
    start: datetime
    end: datetime
    features: list[str] = Field(..., min_length=1)
    labels: LabelConfig = LabelConfig()
    training: TrainingConfig = TrainingConfig()
    lstm: ArchitectureConfig = ArchitectureConfig()
    transformer: ArchitectureConfig = ArchitectureConfig()
    transfer: TransferConfig = TransferConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    promotion: PromotionConfig = PromotionConfig()
    confirmation: ConfirmationConfig = ConfirmationConfig()
    routing: RoutingConfig = RoutingConfig()
    demo: DemoMarketConfig | None = None

    @field_validator("symbols")
    @classmethod
    def _upper_unique(cls, symbols: list[str]) -> list[str]:
        cleaned = [s.strip().upper() for s in symbols]
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("symbols are listed twice")
        return cleaned

    @field_validator("index")
    @classmethod
    def _upper(cls, index: str) -> str:
        return index.strip().upper()

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.start >= self.end:
            raise ValueError(f"start {self.start.isoformat()} is not before end {self.end.isoformat()}")
        known = feature_names(self.interval)
        unknown = [f for f in self.features if f not in known]
        if unknown:
            raise ValueError(f"unknown features for {self.interval} bars: {', '.join(unknown)}"
                             f" (known: {', '.join(known)})")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features are listed twice")
        if self.index in self.symbols:
            raise ValueError(f"the index {self.index} is also listed among the symbols")
        return self

    def label_spec(self) -> LabelSpec:
        return self.labels.spec()

    def with_overrides(self, **overrides: object) -> ExperimentConfig:
        """A copy with the given top-level fields replaced (None values are ignored),
        validated again: how the CLI's ``--symbols``/``--start``/... apply."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return _validate(data, "overrides")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _validate(data: object, origin: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors())
        raise ExperimentError(f"{origin}: {problems}") from None


def load_config(path: Path | str) -> ExperimentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ExperimentError(f"cannot read experiment config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a mapping of settings at the top level")
    return _validate(data, str(path))
