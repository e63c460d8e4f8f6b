"""`winback train --cutoff DATE --horizon-days N` on a retailer's own data, end to end.

No training label may reach DATE; the model is tested on DATE's labels; each data set has its
own registered model; `promote` refuses a challenger of other data or one it cannot evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features import constants as c
from features import modeling_frame as mf
from features.importers.transactions import TransactionMapping, import_transactions
from features.settings import get_settings
from training.errors import RegistryError, TrainingError
from training.fit import reactivation_split
from training.inputs import load_training_inputs
from training.pipeline import train
from training.promote import promote
from training.protocol import choose_protocol
from training.registry import CHALLENGER, CHAMPION, get_alias

MAPPING = TransactionMapping(
    columns={"customer_id": "cust", "ts": "day", "revenue": "amount"}, margin_rate=0.3
)
DATE = "2024-01-01"


def _log(n_customers: int, seed: int, end: str = "2024-06-30") -> pd.DataFrame:
    """Orders from 2023-01 to `end`: each customer buys at their own rate until they stop."""
    rng = np.random.default_rng(seed)
    start, stop = pd.Timestamp("2023-01-01"), pd.Timestamp(end)
    span = (stop - start).days
    rows = []
    for k in range(n_customers):
        first = int(rng.integers(0, 120))
        life = first + int(rng.exponential(300))
        gap = float(rng.gamma(2.0, 20.0 + 40.0 * (k % 3)))
        day = float(first)
        while day < min(life, span):
            rows.append((f"u{k:04d}", start + pd.Timedelta(days=int(day)), rng.gamma(2, 20)))
            day += rng.exponential(gap) + 1
    df = pd.DataFrame(rows, columns=["cust", "day", "amount"])
    return df.assign(day=df["day"].dt.strftime("%Y-%m-%d"), amount=df["amount"].round(2))


def _import(tmp: Path, name: str, seed: int, end: str = "2024-06-30") -> Path:
    src = tmp / f"{name}.csv"
    _log(600, seed, end).to_csv(src, index=False)
    import_transactions(src, tmp / name, MAPPING)
    return tmp / name


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _import(tmp_path_factory.mktemp("shop"), "shop", seed=1)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    return tmp_path / "mlruns"


def test_no_training_label_reaches_the_cutoff(shop: Path, tmp_path: Path) -> None:
    inputs = load_training_inputs(shop, horizon_days=120, cutoff=DATE)
    frame = inputs.reactivation
    assert frame is not None and inputs.protocol is not None
    split = reactivation_split(frame, seed=0)
    fitting = frame.data[(split.train | split.validation).to_numpy()]
    ends = fitting[mf.CUTOFF] + pd.Timedelta(days=inputs.protocol.train_horizon_days)
    assert (ends <= pd.Timestamp(DATE)).all()
    assert set(frame.data.loc[split.test.to_numpy(), mf.CUTOFF]) == {pd.Timestamp(DATE)}
    # the same rows built from the data cut at DATE: nothing after DATE changed a label
    orders = pd.read_parquet(shop / "orders.parquet")
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in shop.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    orders[orders[c.ORDER_TS] < pd.Timestamp(DATE)].to_parquet(cut / "orders.parquet")
    before = load_training_inputs(cut, horizon_days=120, cutoff=DATE)
    assert before.reactivation is not None and before.protocol is not None
    assert not before.protocol.labelled  # the cut data cannot label DATE
    pd.testing.assert_frame_equal(
        fitting.reset_index(drop=True), before.reactivation.data.reset_index(drop=True)
    )


def test_default_cutoff_is_the_last_labelled_date(shop: Path) -> None:
    inputs = load_training_inputs(shop, horizon_days=90)
    p = inputs.protocol
    assert p is not None and p.labelled
    end = pd.read_parquet(shop / "orders.parquet")[c.ORDER_TS].max()
    assert pd.Timestamp(p.cutoff) == end + pd.Timedelta(days=1) - pd.Timedelta(days=90)
    assert "no --cutoff" in p.reason and str(end.date()) in p.reason
    validation = pd.Timestamp(p.cutoff) - pd.DateOffset(months=1)
    assert p.validation_origin == str(validation.date())
    assert p.train_origins[-1] == str((validation - pd.DateOffset(months=1)).date())


def test_cutoff_mirrors_the_cdnow_bench() -> None:
    """The bench's origins and label horizon for 1997-10-01 and 273 days."""
    from features.dataset import DataSet
    from features.importers.transactions import default_catalog

    orders = pd.DataFrame({c.ORDER_TS: pd.to_datetime(["1997-01-01", "1998-06-30"])})
    empty = pd.DataFrame({c.TS: pd.Series([], dtype="datetime64[ns]")})
    data = DataSet(pd.DataFrame(), orders, empty, empty, pd.DataFrame(), default_catalog())
    p = choose_protocol(data, 273, "1997-10-01")
    assert p.train_origins == ("1997-04-01", "1997-05-01", "1997-06-01", "1997-07-01", "1997-08-01")
    assert (p.validation_origin, p.train_horizon_days, p.labelled) == ("1997-09-01", 30, True)


@pytest.mark.parametrize(
    ("cutoff", "message"),
    [("2023-02-01", "too early"), ("2025-01-01", "after the data's end"), ("soon", "not a date")],
)
def test_bad_cutoffs_say_why(shop: Path, cutoff: str, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        load_training_inputs(shop, horizon_days=90, cutoff=cutoff)


@pytest.mark.slow
def test_cli_from_import_to_champion_per_data_set(shop: Path, store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    trained = runner.invoke(
        app,
        ["train", str(shop), "--cutoff", DATE, "--horizon-days", "120", "--model-name", "shop"],
    )
    assert trained.exit_code == 0, trained.output
    out = " ".join(trained.output.split())
    assert "population 'all'" in out and "every training label ends before 2024-01-01" in out
    assert "margin assumed" in out and "0.3 x revenue" in out
    assert "registered shop v1" in out and f"--as-of {DATE}" in out
    assert get_alias(CHALLENGER) is None  # the default name was left alone

    report = tmp_path / "ev.json"
    uri = "models:/shop@challenger"
    ev = runner.invoke(app, ["evaluate", uri, str(shop), "--out", str(report)])
    assert ev.exit_code == 0, ev.output
    doc = json.loads(report.read_text())
    assert 0.5 < doc["metrics"]["reactivation_auc"] <= 1.0
    assert doc["metrics"]["reactivation_test_cutoff_rows"] > 0
    assert "0.3 x revenue" in doc["notes"]["margin_assumed"]

    # another shop's data: refused, then forced
    other = _import(tmp_path, "other", seed=2)
    refused = runner.invoke(app, ["promote", str(other), "--model-name", "shop"])
    assert refused.exit_code != 0
    assert "was trained on" in refused.output and "--force" in refused.output
    assert get_alias(CHAMPION, "shop") is None
    first = runner.invoke(app, ["promote", str(shop), "--model-name", "shop"])
    assert first.exit_code == 0, first.output
    assert "PROMOTED" in first.output and "evaluated on the data" in " ".join(first.output.split())
    assert get_alias(CHAMPION, "shop").version == "1"  # type: ignore[union-attr]


@pytest.mark.slow
def test_promote_refuses_a_challenger_it_cannot_evaluate(shop: Path, store: Path) -> None:
    # DATE = the day after the data: trained, but its labels cannot be observed yet
    end = pd.read_parquet(shop / "orders.parquet")[c.ORDER_TS].max()
    after = str((end + pd.Timedelta(days=1)).date())
    result = train(shop, cutoff=after, horizon_days=60, model_name="future", n_bags=2)
    assert result.protocol is not None and not result.protocol.labelled
    assert "reactivation_auc" not in result.evaluation.metrics
    with pytest.raises(RegistryError, match="nothing in the data that this model can be"):
        promote(shop, model_name="future")
    forced = promote(shop, model_name="future", force=True)
    assert forced.promoted and "forced" in forced.reason


def test_large_training_frames_are_a_customer_sample(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.fit as fit

    inputs = load_training_inputs(shop, horizon_days=120, cutoff=DATE)
    frame = inputs.reactivation
    assert frame is not None
    whole = reactivation_split(frame, seed=0)
    monkeypatch.setattr(fit, "PROTOCOL_MAX_TRAIN_ROWS", int(whole.train.sum()) // 4)
    a, b = reactivation_split(frame, seed=0), reactivation_split(frame, seed=0)
    assert (a.train == b.train).all()  # seeded: the same sample every time
    assert 0 < a.train.sum() < whole.train.sum() // 2
    assert not (a.train & ~whole.train).any()
    # every row of a sampled customer, none of the others
    ids = frame.data.loc[whole.train.to_numpy(), c.CUSTOMER_ID]
    chosen = frame.data.loc[a.train.to_numpy(), c.CUSTOMER_ID]
    assert frame.data.loc[
        whole.train.to_numpy() & frame.data[c.CUSTOMER_ID].isin(set(chosen)).to_numpy()
    ].shape[0] == len(chosen)
    assert len(set(ids)) > len(set(chosen))
    assert (a.test == whole.test).all()  # the test rows are never sampled
    assert "train_sample" in a.info


def test_capped_origin_rows_are_built_only_for_the_customers_the_split_keeps(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the caps, the origins' features are computed for the cap sample's customers only
    (the 1M world's full fit built 6M origin rows to keep 500k, and peaked at 13 GB); the split
    then keeps exactly the rows, and says exactly what, the full frame's split does."""
    import training.fit as fit
    import training.inputs as ti
    from training.protocol import protocol_frame

    full = load_training_inputs(shop, horizon_days=120, cutoff=DATE, seed=4).reactivation
    assert full is not None
    whole = reactivation_split(full, seed=4)
    monkeypatch.setattr(fit, "PROTOCOL_MAX_TRAIN_ROWS", int(whole.train.sum()) // 4)
    monkeypatch.setattr(fit, "PROTOCOL_MAX_VALIDATION_ROWS", int(whole.validation.sum()) // 3)
    capped = load_training_inputs(shop, horizon_days=120, cutoff=DATE, seed=4).reactivation
    monkeypatch.setattr(
        ti,
        "_capped_protocol_frame",
        lambda engine, protocol, seed: protocol_frame(engine, protocol),
    )
    built_all = load_training_inputs(shop, horizon_days=120, cutoff=DATE, seed=4).reactivation
    assert capped is not None and built_all is not None
    assert len(built_all.data) == len(full.data)
    assert len(capped.data) < 0.6 * len(full.data)  # origin rows of the cap sample only
    a, b = reactivation_split(capped, seed=4), reactivation_split(built_all, seed=4)
    assert "train_sample" in a.info and "validation_sample" in a.info
    assert a.info == b.info
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(
            capped.data[getattr(a, part).to_numpy()].reset_index(drop=True),
            built_all.data[getattr(b, part).to_numpy()].reset_index(drop=True),
        )
