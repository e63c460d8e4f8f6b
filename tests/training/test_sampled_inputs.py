"""Training on a customer sample, frames built partition by partition (`--sample-customers`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features import constants as c
from features import modeling_frame as mf
from features.datadir import load_data_dir
from features.partitioned import write_partitioned
from features.settings import get_settings
from features.synthetic.generate import generate_world, write_world
from training.evaluate import Evaluation
from training.fit import RESPONSE_TEST_AFTER, response_split
from training.held_out_eval import evaluate_held_out, scoring_model
from training.inputs import load_training_inputs
from training.pipeline import fit_policy, train
from training.protocol import protocol_origins
from training.sampled_inputs import allocate, strata

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One small world, unpartitioned and split into 3 partitions (ground truth beside both)."""
    root = tmp_path_factory.mktemp("world")
    write_world(generate_world(2500, seed=4), root / "flat")
    data = load_data_dir(root / "flat")
    raw = {name: pd.read_parquet(root / "flat" / f"{name}.parquet") for name in c.TABLES}
    write_partitioned(root / "part", raw, data.catalog, 3)
    truth = root / "flat" / c.GROUND_TRUTH_FILE
    (root / "part" / c.GROUND_TRUTH_FILE).write_bytes(truth.read_bytes())
    return root / "flat", root / "part"


def test_allocation_is_proportional_and_sums_to_n() -> None:
    pop = pd.Series({"0|none": 700, "1|none": 200, "0|pct10": 99, "1|pct10": 1})
    got = allocate(pop, 100)
    assert got.sum() == 100 and got.to_dict() == {
        "0|none": 70,
        "1|none": 20,
        "0|pct10": 10,
        "1|pct10": 0,
    }
    assert allocate(pop, 5000).equals(pop)  # more than the population: everyone


def test_strata_label_and_latest_treatment() -> None:
    react = pd.DataFrame({c.CUSTOMER_ID: ["a", "a", "b"], mf.LABEL: [0, 1, 0]})
    resp = pd.DataFrame(
        {
            c.CUSTOMER_ID: ["a", "a", "c"],
            c.TS: pd.to_datetime(["2024-02-01", "2024-01-01", "2024-01-01"]),
            c.OFFER_ID: ["pct10", "guide", "holdout"],
            mf.CONVERTED: [0, 0, 1],
        }
    )
    s = strata(react, resp).sort_index()
    assert s.to_dict("index") == {
        "a": {"label": 1, "treatment": "pct10"},  # bought again at an origin; latest offer
        "b": {"label": 0, "treatment": "none"},  # never contacted
        "c": {"label": 1, "treatment": "holdout"},  # no origin row: converted after a contact
    }


def test_sampling_everyone_fits_and_evaluates_as_the_whole_data(worlds: tuple[Path, Path]) -> None:
    flat, _ = worlds
    whole = load_training_inputs(flat)
    sampled = load_training_inputs(flat, sample_customers=10**9, seed=0)
    try:
        assert sampled.sample is not None and sampled.held_out is not None
        assert sampled.sample.sampled == sampled.sample.population
        _, ev_whole = fit_policy(whole, seed=0, n_bags=2)
        _, ev_sampled = fit_policy(sampled, seed=0, n_bags=2)
    finally:
        sampled.held_out.remove()  # type: ignore[union-attr]
    assert ev_whole.metrics.keys() <= ev_sampled.metrics.keys()
    for key, value in ev_whole.metrics.items():
        assert ev_sampled.metrics[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key


def test_a_partitioned_sample_is_stratified_seeded_and_evaluated_on_every_held_out_row(
    worlds: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flat, part = worlds
    whole = load_training_inputs(flat)
    inputs = load_training_inputs(part, sample_customers=400, seed=5)
    again = load_training_inputs(part, sample_customers=400, seed=5)
    other = load_training_inputs(part, sample_customers=400, seed=6)
    try:
        sample, held = inputs.sample, inputs.held_out
        assert sample is not None and held is not None
        assert sample.sampled == 400 == int(sample.strata["sampled"].sum())
        assert (sample.strata["sampled"] == sample.strata["target"]).all()
        assert len(sample.strata) > 4  # several labels x treatments
        assert again.sample is not None and again.sample.strata.equals(sample.strata)
        ids = set(inputs.offer_response.data[c.CUSTOMER_ID])  # type: ignore[union-attr]
        react_ids = set(inputs.reactivation.data[c.CUSTOMER_ID])  # type: ignore[union-attr]
        assert len(ids | react_ids) <= 400
        assert set(again.reactivation.data[c.CUSTOMER_ID]) == react_ids  # type: ignore[union-attr]
        assert set(other.reactivation.data[c.CUSTOMER_ID]) != react_ids  # type: ignore[union-attr]

        # held out: exactly the rows the whole data's split holds out, of every customer
        assert whole.offer_response is not None and whole.reactivation is not None
        wtest = whole.offer_response.data[response_split(whole.offer_response, 0)]
        held_resp = held.offer_response_frame()
        assert held_resp is not None
        assert sorted(held_resp.data[c.CONTACT_ID]) == sorted(wtest[c.CONTACT_ID])
        cut = pd.Timestamp(inputs.protocol.cutoff)  # type: ignore[union-attr]
        wreact = whole.reactivation.data
        held_react = pd.concat([f.data for f in held.reactivation_frames()])
        assert len(held_react) == int((wreact[mf.CUTOFF] == cut).sum())
        clean = ~held_react[mf.CONTACTED_IN_WINDOW].astype(bool)
        assert held.rows["reactivation"] == int(clean.sum()) < len(held_react)
        assert not (inputs.reactivation.data[mf.CUTOFF] == cut).any()  # type: ignore[union-attr]
        assert inputs.ground_truth is not None
        assert set(inputs.ground_truth[c.CONTACT_ID]) == set(wtest[c.CONTACT_ID])
    finally:
        for x in (inputs, again, other):
            if x.held_out is not None:
                x.held_out.remove()
    assert not held.folder.exists()

    # the whole command: fitted on the sample, evaluated on all, the sample in the run
    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    result = train(part, seed=5, n_bags=2, sample_customers=400)
    metrics = result.evaluation.metrics
    assert metrics["response_test_rows"] == len(wtest)
    assert metrics["reactivation_test_cutoff_rows"] == int(clean.sum())
    assert result.metadata["reactivation_test_rows"] == str(int(clean.sum()))
    assert "learned_share_of_oracle" in metrics
    run = mlflow.get_run(result.run_id)
    assert run.data.params["meta.sample.customers"] == "400"
    assert run.data.params["meta.sample.seed"] == "5"
    assert run.data.metrics["sample_customers"] == 400
    local = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="customer_sample.json", dst_path=str(tmp_path)
    )
    logged = json.loads(Path(local).read_text())
    assert sum(s["sampled"] for s in logged["strata"]) == 400
    assert np.isfinite(metrics["reactivation_auc"])


def test_features_are_built_only_for_sample_candidates_and_equal_the_whole_frames(
    worlds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The origins' rows and the training contacts get features only for the customers the
    sample may draw (about 1.25 N of them), never for the whole population; the rows built
    are the whole data's rows of the sampled customers, feature for feature."""
    from features.engine import FeatureEngine

    flat, part = worlds
    whole = load_training_inputs(flat)
    assert whole.reactivation is not None and whole.offer_response is not None
    computed: list[pd.DataFrame] = []
    original = FeatureEngine.compute

    def spy(self: FeatureEngine, cust: np.ndarray, as_of: np.ndarray, fs: object) -> object:
        ids = self.customer_ids[np.asarray(cust, dtype=np.int64)].astype(str)
        computed.append(pd.DataFrame({"customer": ids, "as_of": np.asarray(as_of)}))
        return original(self, cust, as_of, fs)  # type: ignore[arg-type]

    monkeypatch.setattr(FeatureEngine, "compute", spy)
    inputs = load_training_inputs(part, sample_customers=400, seed=5)
    monkeypatch.undo()
    try:
        assert inputs.protocol is not None and inputs.sample is not None
        population = inputs.sample.population
        cut = pd.Timestamp(inputs.protocol.cutoff).value
        calls = pd.concat(computed, ignore_index=True)
        cutoff_customers = calls.loc[calls["as_of"] == cut, "customer"].nunique()
        w = whole.reactivation.data
        assert cutoff_customers == int((w[mf.CUTOFF] == pd.Timestamp(cut)).sum())
        origins = [pd.Timestamp(o).value for o in protocol_origins(inputs.protocol)]
        test_after = float(inputs.offer_response.spec.notes[RESPONSE_TEST_AFTER])  # type: ignore[union-attr]
        at_origin = calls["as_of"].isin(origins)
        assert at_origin.any() and (calls["as_of"] <= test_after).any()
        learnable = calls[at_origin | (calls["as_of"] <= test_after)]
        assert learnable["customer"].nunique() < 0.35 * population  # candidates only

        # the same rows and features as the whole data's frames, for the sampled customers
        sampled = set(inputs.reactivation.data[c.CUSTOMER_ID]) | set(  # type: ignore[union-attr]
            inputs.offer_response.data[c.CUSTOMER_ID]  # type: ignore[union-attr]
        )
        keys = [c.CUSTOMER_ID, mf.CUTOFF]
        w = w[w[c.CUSTOMER_ID].isin(sampled) & (w[mf.CUTOFF] != pd.Timestamp(cut))]
        got = inputs.reactivation.data  # type: ignore[union-attr]
        pd.testing.assert_frame_equal(
            got.sort_values(keys).reset_index(drop=True),
            w.sort_values(keys).reset_index(drop=True),
        )
        wr = whole.offer_response.data
        wr = wr[wr[c.CUSTOMER_ID].isin(sampled) & ~response_split(whole.offer_response, 0)]
        gr = inputs.offer_response.data  # type: ignore[union-attr]
        pd.testing.assert_frame_equal(
            gr.sort_values(c.CONTACT_ID).reset_index(drop=True),
            wr.sort_values(c.CONTACT_ID).reset_index(drop=True),
        )
    finally:
        if inputs.held_out is not None:
            inputs.held_out.remove()


def test_worker_processes_give_the_same_sample_frames_and_held_out_rows(
    worlds: tuple[Path, Path],
) -> None:
    _, part = worlds
    one = load_training_inputs(part, sample_customers=300, seed=2)
    two = load_training_inputs(part, sample_customers=300, seed=2, n_jobs=2)
    try:
        assert one.sample is not None and two.sample is not None
        assert two.sample.strata.equals(one.sample.strata)
        for name in ("reactivation", "offer_response"):
            pd.testing.assert_frame_equal(getattr(two, name).data, getattr(one, name).data)
        assert one.held_out is not None and two.held_out is not None
        assert two.held_out.rows == one.held_out.rows
        a, b = one.held_out.offer_response_frame(), two.held_out.offer_response_frame()
        assert a is not None and b is not None
        pd.testing.assert_frame_equal(b.data, a.data)
        # held-out rows scored by two worker processes: the same metrics, every row counted
        _, ev_one = fit_policy(one, seed=2, n_bags=2)
        _, ev_two = fit_policy(one, seed=2, n_bags=2, n_jobs=2)
        assert (
            ev_one.metrics["response_test_rows"]
            == len(a.data)
            == one.held_out.rows["offer_response"]
        )
        assert ev_one.metrics["reactivation_test_cutoff_rows"] == one.held_out.rows["reactivation"]
        assert ev_two.metrics.keys() == ev_one.metrics.keys()
        for key, value in ev_one.metrics.items():
            assert ev_two.metrics[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    finally:
        for x in (one, two):
            if x.held_out is not None:
                x.held_out.remove()


def test_compiled_trees_score_the_held_out_rows_as_lightgbm_does(
    worlds: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("lleaves")
    _, part = worlds
    inputs = load_training_inputs(part, sample_customers=300, seed=2)
    try:
        assert inputs.held_out is not None
        model, plain = fit_policy(inputs, seed=2, n_bags=2)
        compiled = Evaluation()
        with caplog.at_level(logging.INFO, logger="winback.training"):
            evaluate_held_out(
                model, inputs.held_out, compiled, 2, inputs.ground_truth, n_jobs=2, compiled=True
            )
        assert "compiled the model's trees" in caplog.text  # not the LightGBM fallback
        measured = {k: v for k, v in plain.metrics.items() if k in compiled.metrics}
        assert "learned_share_of_oracle" in measured and "reactivation_auc" in measured
        assert measured.keys() == compiled.metrics.keys()
        for key, value in measured.items():
            assert compiled.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    finally:
        inputs.held_out.remove()  # type: ignore[union-attr]


def test_held_out_rows_fall_back_to_lightgbm_when_trees_cannot_compile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import models.compiled

    def refuse(model: object, cache: object = None, jobs: int = 1) -> object:
        raise models.compiled.CompileError("compiled backend: lleaves is not importable")

    monkeypatch.setattr(models.compiled, "compile_policy_model", refuse)
    model = object()
    with caplog.at_level(logging.WARNING, logger="winback.training"):
        assert scoring_model(model, True, None) is model  # type: ignore[arg-type]
    assert "held-out rows scored by LightGBM: compiled backend" in caplog.text


def test_freeze_reads_each_table_at_most_twice_and_freezes_what_the_one_value_passes_do(
    worlds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import features.partition_layout
    from features import frozen
    from features.config import FeatureConfig
    from training.protocol import protocol_between
    from training.sampled_inputs import _freeze_partitioned

    _, part = worlds
    cfg = FeatureConfig()
    reads: list[tuple[str, int]] = []
    original = features.partition_layout.read_partition_table

    def spy(directory: Path, table: str, p: int, columns: object = None) -> object:
        reads.append((table, p))
        return original(directory, table, p, columns)  # type: ignore[arg-type]

    monkeypatch.setattr(features.partition_layout, "read_partition_table", spy)
    got = _freeze_partitioned(part, cfg.horizon_days, None, "all", cfg)
    monkeypatch.undo()
    # orders once for the times and once for both vocabularies (the one-value passes read
    # them four times), contacts and events once
    assert max(reads.count((c.ORDERS, p)) for p in range(3)) == 2
    assert max(reads.count((c.CONTACTS, p)) for p in range(3)) == 1
    end = frozen.data_end(part)
    assert got.end == end
    first = pd.read_parquet(part / c.ORDERS)[c.ORDER_TS].min()
    assert got.protocol == protocol_between(end, pd.Timestamp(first), cfg.horizon_days)
    assert got.protocol is not None
    assert got.fs_react == frozen.resolve_feature_set(part, got.protocol.cutoff_ts, None, cfg)
    last = frozen.last_contact_ts(part)
    assert last is not None
    assert got.fs_offer == frozen.resolve_feature_set(part, last + pd.Timedelta(1, "ns"), None, cfg)
    assert got.fs_offer.feature("favourite_category").vocabulary  # a vocabulary was frozen
    # worker processes freeze the same values
    assert _freeze_partitioned(part, cfg.horizon_days, None, "all", cfg, n_jobs=2) == got
