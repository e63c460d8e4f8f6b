"""The registered pyfunc takes the feature set's own rows: text categoricals as text.

A Hillstrom-like frame stores `zip_code` as text (a pandas categorical) and `recency` as int64.
Training codes `zip_code` into its sorted vocabulary; the pyfunc must accept the raw rows, not
only that float matrix.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.frames import Frame
from features.modeling_frame import FrameSpec
from features.settings import get_settings
from models.errors import FeatureMismatchError, InvalidInputError
from models.policy_model import PolicyModel
from models.uplift import TLearner
from tests.factories import catalog
from training.inputs import TrainingInputs
from training.pipeline import _input_example, log_policy_model
from training.tracking import configure_tracking, use_experiment

VOCAB = ["Rural", "Surburban", "Urban"]
COLUMNS = ("recency", "history", "zip_code")
OPTIONS = ("holdout", "pct10", "freeship")


def raw_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows as an import writes them: int64 recency, float history, categorical zip_code."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "recency": rng.integers(1, 13, n),
            "history": rng.gamma(2.0, 100.0, n),
            "zip_code": pd.Categorical(np.asarray(VOCAB)[rng.integers(0, 3, n)], categories=VOCAB),
        }
    )


def encoded(raw: pd.DataFrame) -> pd.DataFrame:
    """The float matrix training built (training/fit.py encode_features)."""
    out = raw.astype({"recency": float})
    codes = pd.Categorical(raw["zip_code"].astype("string"), categories=VOCAB).codes
    return out.assign(zip_code=np.where(codes < 0, np.nan, codes))


@pytest.fixture(scope="module")
def policy() -> PolicyModel:
    raw = raw_frame(1500, 0)
    X = encoded(raw)
    rng = np.random.default_rng(1)
    t = np.asarray(OPTIONS)[rng.integers(0, 3, len(X))]
    urban = (X["zip_code"] == 2).to_numpy()
    y = (rng.random(len(X)) < 0.1 + 0.15 * urban * (t == "pct10")).astype(int)
    learner = TLearner(n_bags=2, n_estimators=20, categorical_features=["zip_code"])
    learner.fit(X, t, y)
    feature_set = {
        "name": "hillstrom_like",
        "version": "1",
        "features": [
            {"name": "recency", "dtype": "float64", "vocabulary": []},
            {"name": "history", "dtype": "float64", "vocabulary": []},
            {"name": "zip_code", "dtype": "category", "vocabulary": VOCAB},
        ],
    }
    return PolicyModel(
        json.dumps(feature_set),
        COLUMNS,
        OPTIONS,
        "holdout",
        {},
        "test-1",
        response=learner,
        default_option="holdout",
        revenue_feature="history",
        fallback_margin_rate=0.3,
    )


def test_predict_frame_encodes_text_through_the_vocabulary(policy: PolicyModel) -> None:
    raw = raw_frame(40, 2)
    expected = policy.predict_frame(encoded(raw))  # numeric codes keep working
    pd.testing.assert_frame_equal(policy.predict_frame(raw), expected)
    as_text = raw.astype({"zip_code": object})
    pd.testing.assert_frame_equal(policy.predict_frame(as_text), expected)
    as_int32 = raw.astype({"recency": "int32"})
    pd.testing.assert_frame_equal(policy.predict_frame(as_int32), expected)


def test_unknown_and_missing_text_score_as_missing(policy: PolicyModel) -> None:
    raw = raw_frame(3, 3).astype({"zip_code": object})
    raw["zip_code"] = ["Mars", None, "Urban"]
    codes = encoded(raw_frame(3, 3)).assign(zip_code=[np.nan, np.nan, 2.0])
    pd.testing.assert_frame_equal(policy.predict_frame(raw), policy.predict_frame(codes))


def test_bad_input_names_the_column(policy: PolicyModel) -> None:
    raw = raw_frame(3, 4)
    with pytest.raises(FeatureMismatchError, match=r"\['zip_code'\]"):
        policy.predict_frame(raw.drop(columns="zip_code"))
    with pytest.raises(InvalidInputError, match="column recency: value 'soon' is not a number"):
        policy.predict_frame(raw.astype({"recency": object}).assign(recency=["soon", 1, 2]))


@pytest.mark.slow
def test_registered_pyfunc_accepts_raw_rows(
    policy: PolicyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    configure_tracking()
    use_experiment("pyfunc-raw-rows")
    raw = raw_frame(200, 5)
    spec = FrameSpec(
        kind="offer_response",
        feature_set="hillstrom_like@1",
        feature_columns=COLUMNS,
        categorical_columns=("zip_code",),
    )
    inputs = TrainingInputs(
        source=tmp_path, catalog=catalog(), offer_response=Frame(raw.assign(offer_id="x"), spec)
    )
    example = _input_example(policy, inputs)
    assert example["zip_code"].tolist() == raw["zip_code"].head(5).astype(str).tolist()
    with mlflow.start_run():
        uri, _ = log_policy_model(policy, example, tmp_path)

    loaded = mlflow.pyfunc.load_model(uri)
    rows = raw.head(20)  # int64 recency, categorical zip_code: the frame as written
    pd.testing.assert_frame_equal(
        loaded.predict(rows).reset_index(drop=True),
        policy.predict_frame(rows).reset_index(drop=True),
    )
    as_text = rows.astype({"zip_code": object}).reset_index(drop=True)  # as JSON would send
    pd.testing.assert_frame_equal(loaded.predict(as_text), policy.predict_frame(as_text))
    schema = str(loaded.metadata.get_input_schema())
    for column in ("'recency': long", "'history': double", "'zip_code': Any"):
        assert column in schema


def test_input_example_shows_categorical_codes_as_text(policy: PolicyModel, tmp_path: Path) -> None:
    """A frame built from a data directory holds categoricals as codes; the example shows the
    text a caller sends (`zip_code: "Urban"`, as `lapse_state: "lapsed"` in winback_v1)."""
    raw = raw_frame(5, 6)
    codes = encoded(raw)
    codes.loc[4, "zip_code"] = 7.0  # outside the vocabulary: missing, as the model scores it
    spec = FrameSpec(
        kind="offer_response",
        feature_set="hillstrom_like@1",
        feature_columns=COLUMNS,
        categorical_columns=("zip_code",),
    )
    inputs = TrainingInputs(
        source=tmp_path, catalog=catalog(), offer_response=Frame(codes.assign(offer_id="x"), spec)
    )
    example = _input_example(policy, inputs)
    expected = [*raw["zip_code"].astype(str).tolist()[:4], None]
    assert example["zip_code"].tolist() == expected
    assert example["recency"].tolist() == codes["recency"].tolist()
    pd.testing.assert_frame_equal(
        policy.predict_frame(example.head(4)), policy.predict_frame(codes.head(4))
    )


FRESH_ENV_SCRIPT = """
import importlib.util
import pickle
import sys

# winback is not installed here: whatever the model needs of it must come with the model
assert importlib.util.find_spec("models") is None, "a models package is already importable"
import mlflow.pyfunc

model = mlflow.pyfunc.load_model(sys.argv[1])
with open(sys.argv[2], "rb") as fh:
    inputs = pickle.load(fh)
with open(sys.argv[3], "wb") as fh:
    pickle.dump({name: model.predict(rows) for name, rows in inputs.items()}, fh)
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_fresh_virtualenv_loads_and_predicts_from_the_model_alone(
    policy: PolicyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `mlflow models serve --env-manager virtualenv` builds: a new environment with only
    the model's requirements.txt installed (from the pip cache); winback is not in it. The model
    loads and predicts there, and `mlflow models serve` from it answers the same."""
    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    configure_tracking()
    use_experiment("pyfunc-fresh-env")
    with mlflow.start_run():
        uri, _ = log_policy_model(policy, raw_frame(5, 7).astype({"zip_code": object}), tmp_path)
    model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    requirements = (model_dir / "requirements.txt").read_text()
    assert "winback" not in requirements and "lightgbm" in requirements
    assert (model_dir / "code" / "models" / "policy_model.py").is_file()

    env_dir = tmp_path / "env"
    made = _run([sys.executable, "-m", "venv", str(env_dir)], tmp_path)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtualenv here: {made.stderr.strip()[-500:]}")
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"]
    installed = _run([*pip, "-r", str(model_dir / "requirements.txt")], tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]

    rows = raw_frame(30, 8)
    inputs = {"categorical": rows, "text": rows.astype({"zip_code": object})}
    (tmp_path / "in.pkl").write_bytes(pickle.dumps(inputs))
    (tmp_path / "score.py").write_text(FRESH_ENV_SCRIPT)
    scored = _run(
        [python, "-I", "score.py", str(model_dir), "in.pkl", "out.pkl"],
        tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    outputs = pickle.loads((tmp_path / "out.pkl").read_bytes())
    in_process = mlflow.pyfunc.load_model(uri)
    for name, frame in inputs.items():
        pd.testing.assert_frame_equal(outputs[name], in_process.predict(frame))
        pd.testing.assert_frame_equal(outputs[name], policy.predict_frame(frame))

    # and `mlflow models serve` from that environment answers /invocations the same
    served = _serve_and_predict(env_dir, model_dir, inputs["text"], tmp_path)
    expected = in_process.predict(inputs["text"])
    pd.testing.assert_frame_equal(
        served[list(expected.columns)], expected, check_dtype=False, rtol=1e-12
    )


def _serve_and_predict(
    env_dir: Path, model_dir: Path, frame: pd.DataFrame, tmp_path: Path
) -> pd.DataFrame:
    """`mlflow models serve --env-manager local` run from `env_dir`; the answer to `frame`."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # as if activated
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(env_dir / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split"))}).encode()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return pd.DataFrame(json.loads(resp.read())["predictions"])
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.mark.slow
def test_spark_udf_as_docs_batch_md_shows_matches_predict_in_every_cell(
    policy: PolicyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/batch.md's `spark_udf` example, run as written."""
    pytest.importorskip("pyspark")
    from mlflow.models import get_model_info
    from pyspark.sql.functions import struct

    from serving.batch.spark import spark_session

    monkeypatch.setenv("WINBACK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    get_settings.cache_clear()
    configure_tracking()
    use_experiment("pyfunc-spark-udf")
    with mlflow.start_run():
        uri, _ = log_policy_model(policy, raw_frame(5, 9).astype({"zip_code": object}), tmp_path)
    rows = raw_frame(3000, 10)
    frames = {"text": rows}  # coded categoricals take the same path (predict_frame tests)
    expected = mlflow.pyfunc.load_model(uri).predict
    spark = spark_session("local[2]", "winback-test-udf")
    try:
        for name, frame in frames.items():
            path = tmp_path / f"{name}.parquet"
            frame.assign(customer_id=[f"c{i:05d}" for i in range(len(frame))]).to_parquet(path)

            # --- as in docs/batch.md
            signature = get_model_info(uri).signature
            udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local")
            features = spark.read.parquet(str(path))
            scored = features.select(
                "customer_id", udf(struct(*signature.inputs.input_names())).alias("scores")
            ).select("customer_id", "scores.*")
            # ---

            fields = [(f.name, f.dataType) for f in udf.returnType.fields]  # type: ignore[attr-defined]
            outputs = signature.outputs.as_spark_schema().fields
            assert fields == [(f.name, f.dataType) for f in outputs]
            got = scored.toPandas().sort_values("customer_id").reset_index(drop=True)
            want = expected(frame)
            assert list(got.columns) == ["customer_id", *want.columns]
            assert want["best_offer"].nunique() > 1  # not one column repeated
            got = got.drop(columns="customer_id").astype(want.dtypes.to_dict())
            pd.testing.assert_frame_equal(got, want, check_exact=True)
            assert got.size == 9 * 3000
    finally:
        spark.stop()
