"""`winback simulate`: off-policy estimates of a candidate policy, checked against the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.simulation import simulate
from features.synthetic import SyntheticWorld, generate_world, write_world
from serving.policy import parse_policy
from training.errors import TrainingError

# Rules only: content first, then the plain message; occasional customers are not eligible,
# so they fall to the holdout arm. A policy different from the randomized logging policy.
CANDIDATE = """
journey:
  stages:
    - {name: a, offer_types: [content, none, percent_discount], min_days_since_previous: 0}
    - {name: b, offer_types: [content, none, percent_discount], min_days_since_previous: 0}
    - {name: c, offer_types: [content, none, percent_discount], min_days_since_previous: 0}
  sunset_days: 0
holdout: {share: 0.0, salt: s}
eligibility:
  value_tiers: [mid, high]
  lapse_states: [at_risk, lapsed, churned]
channel_preference: [email, sms, push, in_app, direct_mail]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticWorld, Path]:
    w = generate_world(8_000, 3)
    return w, write_world(w, tmp_path_factory.mktemp("sim") / "world")


def test_estimates_cover_the_true_conversion_of_the_candidate(
    world: tuple[SyntheticWorld, Path],
) -> None:
    w, data = world
    sim = simulate(data, parse_policy(CANDIDATE), n_boot=200, seed=1)
    truth = w.ground_truth.set_index("contact_id").loc[sim.choices.index]
    p = {o: truth[f"p_{o}"].to_numpy() for o in w.model.option_ids}
    rows = np.arange(len(truth))
    true_candidate = float(np.mean([p[o][i] for i, o in zip(rows, sim.choices, strict=True)]))
    conv = sim.table.loc["conversions"].astype(float).to_dict()
    assert conv["candidate_low"] <= true_candidate <= conv["candidate_high"]
    assert abs(conv["candidate"] - true_candidate) < 0.02
    # the candidate sends no incentive, so it costs nothing and contacts fewer customers
    cost = sim.table.loc["incentive_cost"].astype(float).to_dict()
    assert cost["candidate"] == 0.0 and cost["current"] > 0.0
    assert sim.contact_share_candidate < sim.contact_share_current
    assert set(sim.choices) <= {"guide", "none", "holdout"}
    incr = sim.incremental_margin.loc["candidate"].astype(float).to_dict()
    assert incr["ci_low"] <= incr["estimate"] <= incr["ci_high"]


def test_no_logged_rows_is_a_clear_error(world: tuple[SyntheticWorld, Path]) -> None:
    _, data = world
    with pytest.raises(TrainingError, match="in campaign 'nope'"):
        simulate(data, parse_policy(CANDIDATE), campaign="nope")


def test_cli_simulate(world: tuple[SyntheticWorld, Path], tmp_path: Path) -> None:
    _, data = world
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE, encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(
        app, ["simulate", "--data", str(data), "--policy", str(policy), "--n-boot", "50"]
    )
    assert res.exit_code == 0, res.output
    assert "conversions" in res.output and "incremental margin" in res.output
    bad = runner.invoke(app, ["simulate", "--data", str(data), "--policy", str(tmp_path / "x")])
    assert bad.exit_code == 1
