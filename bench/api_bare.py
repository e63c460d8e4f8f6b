"""A bare FastAPI scoring endpoint: the floor the decision API is compared with.

`POST /score {"customer_id": "..."}` takes that customer's feature row from the serving
snapshot plus the rows after it (`BARE_ROWS` rows in all, default 10), scores them with the
registered `winback-policy` (the same `PolicyModel.score`, so the same LightGBM boosters
the API calls) and returns each row's best option. No guardrails, no store, no logging,
no API key: only JSON in, boosters, JSON out.

`ceiling_app` is the framework's ceiling: `POST /ceiling` answers a constant JSON object
(nothing read, nothing validated), under the same uvicorn as `winback serve`; the bench
states every other target as a share of its requests per second in the same run.

Run (the bench does this)::

    BARE_MODEL_URI=models:/winback-policy@champion BARE_SNAPSHOT_DIR=DIR \\
    WINBACK_MLRUNS_DIR=mlruns .venv/bin/uvicorn bench.api_bare:app_from_env --factory
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from features.snapshot import Snapshot
from models.policy_model import PolicyModel


class ScoreRequest(BaseModel):
    customer_id: str


class ScoreResponse(BaseModel):
    customer_id: str
    best: list[str]
    value: list[float]


def create_bare_app(model: PolicyModel, snapshot: Snapshot, rows: int = 10) -> FastAPI:
    """The bare endpoint over an already loaded model and snapshot."""
    options = np.asarray(model.options, dtype=object)
    n = snapshot.matrix.shape[0]
    app = FastAPI(title="winback-bare-scoring")

    @app.post("/score", response_model=ScoreResponse)
    def score(body: ScoreRequest) -> ScoreResponse:
        i = snapshot.row_of.get(body.customer_id)
        if i is None:
            raise HTTPException(404, f"customer_id: unknown customer {body.customer_id!r}")
        start = min(i, n - rows)
        s = model.score(np.asarray(snapshot.matrix[start : start + rows], dtype=np.float64))
        best = np.nanargmax(s.decision_value, axis=1)
        return ScoreResponse(
            customer_id=body.customer_id,
            best=[str(o) for o in options[best]],
            value=[float(v) for v in s.value[np.arange(len(best)), best]],
        )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


CONSTANT = {"status": "ok", "action": "none", "recorded": False}


def ceiling_app() -> FastAPI:
    """A FastAPI app whose one endpoint returns a constant JSON object (the ceiling)."""
    app = FastAPI(title="winback-ceiling")

    @app.post("/ceiling")
    async def ceiling() -> dict[str, object]:
        return CONSTANT

    return app


def app_from_env() -> FastAPI:
    """Uvicorn factory: model and snapshot named by `BARE_MODEL_URI`, `BARE_SNAPSHOT_DIR`."""
    import mlflow

    from features.settings import get_settings
    from models.pyfunc import load_policy_model

    mlflow.set_tracking_uri(get_settings().resolved_tracking_uri())
    model = load_policy_model(os.environ.get("BARE_MODEL_URI", "models:/winback-policy@champion"))
    snapshot = Snapshot.load(Path(os.environ["BARE_SNAPSHOT_DIR"]))
    return create_bare_app(model, snapshot, int(os.environ.get("BARE_ROWS", "10")))
