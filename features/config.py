"""Thresholds and windows of the feature layer, from `WINBACK_FEATURES_*` variables or defaults.

Nothing is read at import time: build a `FeatureConfig()` (it reads the environment then) or
pass one explicitly; the builder takes it as an argument, so tests inject their own.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.errors import FeaturesError


class FeatureConfigError(FeaturesError):
    """A feature or frame setting is invalid (names the setting)."""

    code = "feature_config"


class FeatureConfig(BaseSettings):
    """Lapse-state and value-tier thresholds, frame horizons and vocabulary limits."""

    model_config = SettingsConfigDict(env_prefix="WINBACK_FEATURES_", extra="ignore", frozen=True)

    at_risk_days: int = Field(90, gt=0, description="no order for this many days: at_risk")
    lapsed_days: int = Field(180, gt=0, description="no order for this many days: lapsed")
    churned_days: int = Field(365, gt=0, description="no order for this many days: churned")
    mid_tier_revenue: float = Field(150.0, ge=0, description="lifetime revenue for tier 'mid'")
    high_tier_revenue: float = Field(500.0, ge=0, description="lifetime revenue for tier 'high'")
    horizon_days: int = Field(90, gt=0, description="reactivation label horizon H")
    attribution_days: int = Field(30, gt=0, description="offer-response attribution window")
    max_categories: int = Field(50, gt=0, description="largest favourite_category vocabulary")

    @model_validator(mode="after")
    def _ordered(self) -> FeatureConfig:
        if not self.at_risk_days < self.lapsed_days < self.churned_days:
            raise ValueError("need at_risk_days < lapsed_days < churned_days")
        if self.mid_tier_revenue > self.high_tier_revenue:
            raise ValueError("mid_tier_revenue must not exceed high_tier_revenue")
        return self
