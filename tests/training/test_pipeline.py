"""End to end: train on a small synthetic world, register, load, evaluate, promote."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.output import console as cli_console
from features import constants as c
from features.settings import get_settings
from features.synthetic.generate import generate_world, write_world
from models.pyfunc import load_policy_model
from training.errors import NothingToTrainError, RegistryError, TrackingError, TrainingError
from training.inputs import load_training_inputs
from training.pipeline import train
from training.promote import promote
from training.registry import CHALLENGER, CHAMPION, get_alias

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(4000, seed=3), out)
    return out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    return tmp_path / "mlruns"


def test_train_registers_challenger_that_scores(world: Path, store: Path) -> None:
    result = train(world, seed=1, n_bags=2)
    assert result.trained == ["reactivation", "offer_response"]
    assert get_alias(CHALLENGER) is not None
    assert get_alias(CHALLENGER).version == result.version  # type: ignore[union-attr]
    metrics = result.evaluation.metrics
    assert 0.5 < metrics["reactivation_auc"] <= 1.0
    assert "true_incremental_margin_oracle" in metrics
    # each model's split under its own keys: the reactivation rows do not overwrite the
    # response model's training contacts (they used to share "train_rows")
    meta = result.metadata
    assert int(meta["train_rows"]) == int(meta["support_rows"])  # every training contact
    assert int(meta["reactivation_train_rows"]) > 0 and "reactivation_test_cutoff" in meta
    # policy value by value tier and by lapse state: every held-out contact in one group
    slices = result.evaluation.tables["policy_value_slices"]
    for col in ("value_tier", "lapse_state"):
        assert slices.loc[col, "n"].sum() == metrics["response_test_rows"]
    big = slices[slices["n"] >= 200]
    assert len(big) and (big["ci_low"] <= big["difference"]).all()
    assert np.allclose(big["learned_dr"] - big["best_single_dr"], big["difference"])
    # the oracle is the best possible policy: nothing beats it on the truth
    oracle = metrics["true_incremental_margin_oracle"]
    for name in ("learned", "best_single", "random", "no_incentive"):
        assert metrics[f"true_incremental_margin_{name}"] <= oracle

    # the registered pyfunc answers like any MLflow model
    pyfunc = mlflow.pyfunc.load_model(f"models:/winback-policy@{CHALLENGER}")
    model = load_policy_model(f"models:/winback-policy@{CHALLENGER}")
    X = pd.DataFrame(np.zeros((3, len(model.feature_columns))), columns=model.feature_columns)
    out = pyfunc.predict(X)
    for option in model.options:
        assert f"p_{option}" in out and f"value_{option}" in out
    assert set(out["best_offer"]) <= set(model.options)
    assert (out[f"value_{model.control}"] == 0).all()  # no contact is the zero of value

    # the run logs the z the decision rule uses; the package ships its code; the input example
    # shows categoricals as the text a caller sends, not as the frame's codes
    params = mlflow.get_run(result.run_id).data.params
    assert params["z"] == meta["decision_rule_z"] and params["z_given"] == "False"
    assert float(params["z"]) == model.z
    local = Path(mlflow.artifacts.download_artifacts(result.model_uri))
    assert (local / "code" / "models" / "pyfunc.py").is_file()
    example = json.loads((local / "input_example.json").read_text())
    rows = pd.DataFrame(example["data"], columns=example["columns"])
    assert set(rows["lapse_state"].dropna()) <= set(c.LAPSE_STATES)
    assert set(rows["value_tier"].dropna()) <= set(c.VALUE_TIERS)
    assert rows["lapse_state"].notna().any()
    pd.testing.assert_frame_equal(pyfunc.predict(rows), model.predict_frame(rows))


def test_same_seed_same_model_and_metrics(world: Path, store: Path) -> None:
    a = train(world, seed=5, n_bags=2)
    b = train(world, seed=5, n_bags=2)
    assert a.evaluation.metrics == b.evaluation.metrics
    ma = load_policy_model(a.model_uri)
    mb = load_policy_model(b.model_uri)
    X = np.random.default_rng(0).normal(size=(20, len(ma.feature_columns)))
    np.testing.assert_array_equal(ma.score(X).decision_value, mb.score(X).decision_value)


def test_promote_first_becomes_champion_then_requires_evidence(world: Path, store: Path) -> None:
    first = train(world, seed=2, n_bags=2)
    r1 = promote(world, seed=2)
    assert r1.promoted and get_alias(CHAMPION).version == first.version  # type: ignore[union-attr]
    again = promote(world, seed=2)  # the challenger is the champion: nothing moves
    assert (
        not again.promoted
        and again.reason == f"v{first.version} is already champion: nothing to compare"
    )
    with pytest.raises(TrainingError, match="no such file"):  # bad data: nothing recorded
        promote(world.parent / "missing", seed=2)
    second = train(world, seed=2, n_bags=2)  # same data and seed: the same policy
    r2 = promote(world, seed=2)
    assert not r2.promoted
    assert r2.difference == pytest.approx(0.0)
    assert get_alias(CHAMPION).version == first.version  # type: ignore[union-attr]
    r3 = promote(world, seed=2, force=True)
    assert r3.promoted and r3.reason.startswith("forced")
    assert get_alias(CHAMPION).version == second.version  # type: ignore[union-attr]


def test_experiment_errors_come_before_fitting(
    world: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("fitted before the experiment was checked")

    monkeypatch.setattr("training.pipeline.fit_policy", no_fit)
    with pytest.raises(TrackingError, match="MLflow experiment ''"):
        train(world, experiment="", seed=1, n_bags=2)


def test_data_without_contacts_trains_reactivation_only(world: Path, tmp_path: Path) -> None:
    no_contacts = tmp_path / "no_contacts"
    no_contacts.mkdir()
    for f in world.iterdir():
        if f.name not in ("contacts.parquet", "events.parquet", c.GROUND_TRUTH_FILE):
            (no_contacts / f.name).write_bytes(f.read_bytes())
    inputs = load_training_inputs(no_contacts)
    assert inputs.offer_response is None and inputs.reactivation is not None
    assert "no past contacts" in inputs.skipped["offer_response"]


def test_reactivation_only_promotion_needs_a_confident_auc(
    world: Path, store: Path, tmp_path: Path
) -> None:
    no_contacts = tmp_path / "no_contacts"
    no_contacts.mkdir()
    for f in world.iterdir():
        if f.name not in ("contacts.parquet", "events.parquet", c.GROUND_TRUTH_FILE):
            (no_contacts / f.name).write_bytes(f.read_bytes())
    first = train(no_contacts, seed=1)
    assert promote(no_contacts).promoted
    train(no_contacts, seed=2)  # another seed: about the same AUC
    r = promote(no_contacts)
    assert r.criterion == "reactivation AUC (test cutoff)"
    # a real bootstrap bound, below the point estimate (it used to be the estimate itself)
    assert r.challenger_ci_low < r.challenger_value
    lo, hi = r.difference_ci
    assert lo < r.difference < hi
    assert not r.promoted and get_alias(CHAMPION).version == first.version  # type: ignore[union-attr]


def test_models_that_cannot_be_compared_move_only_with_force(
    world: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.errors import FeatureMismatchError

    train(world, seed=1, n_bags=2)
    promote(world)
    second = train(world, seed=2, n_bags=2)

    def other_features(*args: object) -> None:
        raise FeatureMismatchError("the data lacks 7 of the model's hillstrom@1 features")

    monkeypatch.setattr("training.promote._compare_policies", other_features)
    with pytest.raises(RegistryError, match=r"cannot compare v2 with champion v1 .*--force"):
        promote(world)
    forced = promote(world, force=True)
    assert forced.promoted and forced.criterion == "not comparable"
    assert get_alias(CHAMPION).version == second.version  # type: ignore[union-attr]


def test_nothing_to_train_is_a_clear_error(tmp_path: Path, world: Path) -> None:
    only = tmp_path / "tiny"
    only.mkdir()
    (only / "offers.yaml").write_bytes((world / "offers.yaml").read_bytes())
    with pytest.raises(NothingToTrainError, match=r"nothing to train.*winback import hillstrom"):
        load_training_inputs(only)
    raw = tmp_path / "hillstrom.csv"
    raw.write_text("recency,history\n1,2\n")
    with pytest.raises(TrainingError, match=r"a raw file, not a modeling frame.*winback import"):
        load_training_inputs(raw)


def test_cli_train_reports_skips_and_registers(
    world: Path, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_console, "_width", 80)  # an 80-column terminal
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(world), "--seed", "4", "--bags", "2"])
    assert result.exit_code == 0, result.output
    run = mlflow.get_run(mlflow.search_runs(experiment_names=["winback"]).iloc[0]["run_id"])
    trained_metrics = run.data.metrics
    assert "registered winback-policy v1 as 'challenger'" in result.output
    assert "decision rule choice" in result.output  # the rules training chose among
    assert "decision_rule_z" in result.output
    for stage in ("loading", "fitting the reactivation model", "fitting offer response"):
        assert stage in result.output  # progress instead of a minute of silence
    result = runner.invoke(app, ["train", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "no such file or directory" in result.output
    assert "Traceback" not in result.output
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app, ["evaluate", "models:/winback-policy@challenger", str(world), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and "reactivation_auc" in out.read_text()
    # the tables fit 80 columns: nothing cut, counts as integers
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output
    n_test = json.loads(out.read_text())["metrics"]["reactivation_test_cutoff_rows"]
    assert f" {int(n_test):,} " in result.output and f"{n_test:,.4f}" not in result.output
    # evaluate's default bootstrap seed is the model's: it reproduces training's figures
    assert json.loads(out.read_text())["metrics"]["policy_learned_dr"] == pytest.approx(
        trained_metrics["policy_learned_dr"]
    )
    result = runner.invoke(
        app,
        ["evaluate", "models:/winback-policy@challenger", str(world), "--out", "/nonexistent/x"],
    )
    assert result.exit_code == 1 and "--out: directory /nonexistent does not exist" in result.output
    for command in (["train", str(world)], ["promote", str(world)]):
        result = runner.invoke(app, [*command, "--seed", "-1"])
        assert result.exit_code == 2 and "--seed" in result.output, result.output


def test_compiled_backend_scores_like_lightgbm(world: Path, store: Path, tmp_path: Path) -> None:
    pytest.importorskip("lleaves", reason="the 'compiled' extra (lleaves) is not installed")
    from serving.model_scorer import mlflow_scorer_loader
    from serving.settings import ServingSettings

    train(world, seed=6, n_bags=2)
    uri = f"models:/winback-policy@{CHALLENGER}"
    plain = mlflow_scorer_loader(serving=ServingSettings(model_backend="lightgbm"))(uri)
    compiled = mlflow_scorer_loader(
        serving=ServingSettings(model_backend="lleaves", compiled_cache_dir=tmp_path / "cc")
    )(uri)
    X = np.random.default_rng(1).normal(size=(50, len(plain.model.feature_columns)))
    (p1, v1), (p2, v2) = plain.score(X), compiled.score(X)
    np.testing.assert_allclose(p1, p2, atol=1e-9)
    np.testing.assert_allclose(v1, v2, atol=1e-9, equal_nan=True)
    assert plain.version == compiled.version
