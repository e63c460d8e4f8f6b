"""Reactivation and offer-response frames: rows, labels, outcomes, files and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features import modeling_frame as mf
from features.config import FeatureConfig, FeatureConfigError
from features.engine import FeatureEngine
from features.frames import offer_response_frame, reactivation_frame, write_frames
from tests.factories import World, dataset

CUTOFF = "2023-07-01"


def world() -> World:
    w = World()
    w.customer("c1", "2023-01-01").customer("c2", "2023-01-01").customer("c3", "2023-01-01")
    w.customer("c4", "2021-12-01").customer("c5", "2022-11-01")
    w.order("c1", "2023-01-10", 100.0, 30.0).order("c1", "2023-08-15", 50.0, 20.0)
    w.order("c2", "2023-01-05", 80.0, 10.0)
    w.order("c3", "2023-06-20")  # active at the cutoff
    w.order("c4", "2022-01-01")  # churned
    w.order("c5", "2022-12-01")  # lapsed
    w.contact("c1", "2023-07-10", "pct10", "email", contact_id="k1")
    w.contact("c2", "2023-07-10", "holdout", contact_id="k2")
    w.contact("c1", "2023-07-20", "guide", "email", stage=2, contact_id="k3")
    w.event("c2", "2023-07-20", "unsubscribe")
    w.consent("c1", "sms", "opted_out", "2023-07-15")
    w.event("c3", "2023-12-31", "visit")  # the data run to the end of 2023
    return w


@pytest.fixture(scope="module")
def engine() -> FeatureEngine:
    return FeatureEngine(dataset(world()))


def test_reactivation_rows_labels_and_contacts(engine: FeatureEngine) -> None:
    frame = reactivation_frame(engine, [CUTOFF], horizon_days=90)
    df = frame.data.set_index("customer_id")
    assert sorted(df.index) == ["c1", "c2", "c5"]  # at_risk or lapsed only
    assert df.loc["c1", mf.LABEL] == 1 and df.loc["c2", mf.LABEL] == 0
    assert df.loc["c1", mf.OUTCOME_MARGIN] == 20 and df.loc["c1", mf.OUTCOME_REVENUE] == 50
    assert df.loc["c1", mf.CONTACTED_IN_WINDOW]
    assert not df.loc["c2", mf.CONTACTED_IN_WINDOW]  # a holdout is not a contact
    assert (df[mf.CUTOFF] == pd.Timestamp(CUTOFF)).all()
    # features are as of the cutoff: the reactivating order is not in them
    assert df.loc["c1", "orders_lifetime"] == 1
    assert frame.spec.kind == "reactivation" and frame.spec.time_column == mf.CUTOFF
    assert "lapse_state" in frame.spec.categorical_columns
    assert frame.spec.notes["horizon_days"] == "90"


def test_shorter_horizon_changes_the_label(engine: FeatureEngine) -> None:
    df = reactivation_frame(engine, [CUTOFF], horizon_days=30).data.set_index("customer_id")
    assert df.loc["c1", mf.LABEL] == 0  # the order came 45 days after the cutoff


def test_cutoff_whose_window_runs_past_the_data_is_refused(engine: FeatureEngine) -> None:
    with pytest.raises(FeatureConfigError, match="label window ends after the data"):
        reactivation_frame(engine, ["2023-12-01"], horizon_days=90)


def test_offer_response_rows_features_and_outcomes(engine: FeatureEngine) -> None:
    df = offer_response_frame(engine).data.set_index("contact_id")
    assert list(df.index) == ["k1", "k2", "k3"]  # holdouts included
    assert df.loc["k2", "offer_id"] == "holdout" and df.loc["k1", "propensity"] == 0.5
    # as of each contact's own time: k1 does not see itself, k3 sees k1
    assert math.isnan(df.loc["k1", "days_since_last_contact"])
    assert df.loc["k3", "days_since_last_contact"] == 10 and df.loc["k3", "contacts_30d"] == 1
    assert df.loc["k1", mf.CONVERTED] == 0  # order 36 days later, window 30 days
    assert df.loc["k3", mf.CONVERTED] == 1 and df.loc["k3", mf.DAYS_TO_ORDER] == 26
    assert df.loc["k3", mf.OUTCOME_MARGIN] == 20
    assert df.loc["k2", mf.UNSUBSCRIBED] == 1  # unsubscribe event in the window
    assert df.loc["k1", mf.UNSUBSCRIBED] == 0  # opt-out on sms, contacted by email
    assert df["window_complete"].all()


def test_attribution_window_from_config() -> None:
    eng = FeatureEngine(dataset(world()), FeatureConfig(attribution_days=40))
    df = offer_response_frame(eng).data.set_index("contact_id")
    assert df.loc["k1", mf.CONVERTED] == 1 and df.loc["k1", mf.DAYS_TO_ORDER] == 36


def test_written_frames_carry_their_spec(tmp_path: Path) -> None:
    write_frames(dataset(world()), tmp_path, [CUTOFF], 90)
    react, spec = mf.read_frame(tmp_path / "reactivation.parquet")
    offer, ospec = mf.read_frame(tmp_path / "offer_response.parquet")
    assert spec.kind == "reactivation" and len(react) == 3
    assert ospec.kind == "offer_response" and ospec.propensity_column == "propensity"
    assert ospec.feature_columns == spec.feature_columns
    assert list(offer.columns[-6:]) == [
        mf.CONVERTED,
        mf.OUTCOME_REVENUE,
        mf.OUTCOME_MARGIN,
        mf.DAYS_TO_ORDER,
        mf.UNSUBSCRIBED,
        "window_complete",
    ]


def test_cli_frames_and_errors(tmp_path: Path) -> None:
    data_dir = world().write(tmp_path / "data")
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "features",
            "frames",
            str(data_dir),
            "--out",
            str(tmp_path / "f"),
            "--cutoffs",
            CUTOFF,
            "--horizon-days",
            "90",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "reactivation frame (3 rows)" in ok.output
    assert (tmp_path / "f" / "offer_response.parquet").exists()
    late = runner.invoke(
        app,
        [
            "features",
            "frames",
            str(data_dir),
            "--out",
            str(tmp_path / "g"),
            "--cutoffs",
            "2023-12-01",
        ],
    )
    assert late.exit_code == 1 and "label window ends after" in late.output
    two = runner.invoke(
        app,
        [
            "features",
            "frames",
            str(data_dir),
            "--out",
            str(tmp_path / "h"),
            "--cutoffs",
            "2023-06-01,2023-07-01",
            "--horizon-days",
            "60",
        ],
    )
    assert two.exit_code == 0, two.output
    assert set(mf.read_frame(tmp_path / "h" / "reactivation.parquet")[0][mf.CUTOFF]) == {
        pd.Timestamp("2023-06-01"),
        pd.Timestamp("2023-07-01"),
    }
    assert "Traceback" not in late.output
    missing = runner.invoke(app, ["features", "frames", str(tmp_path / "nope"), "--out", "x"])
    assert missing.exit_code == 1 and "not a directory" in missing.output


def test_a_customer_without_any_history_and_no_contacts_at_all() -> None:
    eng = FeatureEngine(dataset(World().customer("c1", "2023-01-01").order("c1", "2023-02-01")))
    offer = offer_response_frame(eng)
    assert len(offer.data) == 0 and offer.spec.kind == "offer_response"
    react = reactivation_frame(eng, ["2023-01-15"], horizon_days=10)
    assert len(react.data) == 0  # the one customer had not ordered yet: no lapse state


@pytest.mark.slow
def test_frames_on_the_real_cdnow_log(shared_data: Path, tmp_path: Path) -> None:
    from features.datadir import load_data_dir
    from features.importers.cdnow import import_cdnow

    import_cdnow(shared_data / "cdnow" / "CDNOW_master.txt", tmp_path / "cdnow")
    built = write_frames(load_data_dir(tmp_path / "cdnow"), tmp_path / "frames", horizon_days=90)
    react = built["reactivation.parquet"].data
    assert react[mf.CUTOFF].nunique() == 4 and len(react) > 1000
    assert 0 < react[mf.LABEL].mean() < 1  # some lapsed customers come back, most do not
    assert not react[mf.CONTACTED_IN_WINDOW].any()  # CDNOW has no contacts
    assert len(built["offer_response.parquet"].data) == 0
