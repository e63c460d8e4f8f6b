"""Policy file: validation with named keys, content-hash versioning, holdout assignment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from features.constants import CHANNELS, LAPSE_STATES, OFFER_TYPES
from serving.errors import PolicyError, ServingError
from serving.policy import (
    LapseState,
    Policy,
    holdout_scores,
    in_holdout,
    load_policy,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "policy.example.yaml"

MINIMAL = """
journey:
  stages:
    - {name: reconnect, offer_types: [none], min_days_since_previous: 0}
    - {name: offer, offer_types: [percent_discount, free_shipping], min_days_since_previous: 7}
  sunset_days: 90
holdout: {share: 0.1, salt: s1}
channel_preference: [email, sms]
"""


def _error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="policy.yaml")
    assert info.value.code == "policy_invalid"
    return str(info.value)


def test_example_policy_loads_and_documents_every_top_level_key() -> None:
    policy = load_policy(EXAMPLE)
    assert len(policy.journey.stages) == 8
    assert policy.journey.stage_number("personal_offer") == 5
    assert policy.version.startswith("sha256:") and len(policy.version) == 19
    text = EXAMPLE.read_text()
    for key in Policy.model_fields:
        if key != "version":
            assert f"\n{key}:" in text, f"{key} missing from policy.example.yaml"


def test_minimal_policy_gets_defaults() -> None:
    policy = parse_policy(MINIMAL)
    assert policy.frequency.across_channels == ()
    assert policy.exploration.epsilon == 0.0
    assert policy.eligibility.channels == CHANNELS
    assert policy.auto_channels() == ("email", "sms")


def test_version_is_content_hash_of_bytes() -> None:
    a = parse_policy(MINIMAL)
    assert parse_policy(MINIMAL.encode()).version == a.version
    assert parse_policy(MINIMAL + "# a comment\n").version != a.version


def test_negative_days_error_names_the_key_path() -> None:
    text = MINIMAL.replace("min_days_since_previous: 7", "min_days_since_previous: -1")
    assert _error(text) == (
        "policy.yaml: journey.stages[1].min_days_since_previous: "
        "Input should be greater than or equal to 0"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "frequency: {max_per_week: 3}\n", "frequency.max_per_week: Extra inputs"),
        (MINIMAL.replace("[none]", "[coupon]"), "journey.stages[0].offer_types[0]: Input should"),
        (MINIMAL.replace("share: 0.1", "share: 1.5"), "holdout.share: Input should be less"),
        (MINIMAL.replace("[email, sms]", "[email, email]"), "channel 'email' appears more"),
        (MINIMAL.replace("name: offer", "name: reconnect"), "stage name 'reconnect' appears"),
        (MINIMAL + "margin_floor: {share_of_revenue: 2}\n", "margin_floor.share_of_revenue"),
        (MINIMAL + "version: v1\n", "version: is computed from the file content"),
        (MINIMAL.replace("holdout: {share: 0.1, salt: s1}\n", ""), "holdout: Field required"),
        ("journey: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_invalid_policy_is_rejected_with_key_and_problem(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")
    assert issubclass(PolicyError, ServingError)


def test_literal_types_match_shared_enumerations() -> None:
    assert get_args(LapseState) == LAPSE_STATES
    policy = parse_policy(MINIMAL.replace("[none]", "[" + ", ".join(OFFER_TYPES) + "]"))
    assert policy.journey.stages[0].offer_types == OFFER_TYPES


def test_margin_floor_takes_the_larger_floor() -> None:
    policy = parse_policy(MINIMAL + "margin_floor: {absolute: 5, share_of_revenue: 0.1}\n")
    np.testing.assert_allclose(policy.margin_floor.floor([10.0, 100.0]), [5.0, 10.0])


def test_holdout_is_deterministic_and_close_to_share() -> None:
    ids = [f"c{i:06d}" for i in range(20_000)]
    mask = in_holdout(ids, "salt-a", 0.1)
    assert mask.dtype == np.bool_ and mask.shape == (20_000,)
    assert abs(mask.mean() - 0.1) < 0.01
    np.testing.assert_array_equal(mask, in_holdout(np.array(ids), "salt-a", 0.1))
    # another salt draws another group
    other = in_holdout(ids, "salt-b", 0.1)
    assert (mask & other).sum() < 0.2 * mask.sum()
    # a larger share only adds customers
    assert not (mask & ~in_holdout(ids, "salt-a", 0.2)).any()
    assert not in_holdout(ids, "salt-a", 0.0).any()
    assert in_holdout(ids, "salt-a", 1.0).all()


def test_holdout_is_stable_across_processes() -> None:
    """Python's hash() is salted per process; the holdout must not be."""
    ids = [f"cust-{i}" for i in range(200)]
    here = in_holdout(ids, "s", 0.3)
    code = (
        "from serving.policy import in_holdout;"
        f"print(''.join('1' if b else '0' for b in in_holdout({ids!r}, 's', 0.3)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.strip()
    assert out == "".join("1" if b else "0" for b in here)


def test_holdout_known_values_do_not_drift() -> None:
    # Pinned: changing the hash would silently reshuffle every running experiment.
    scores = holdout_scores(["a", "b", "c", "d", "e", "f"], "s")
    np.testing.assert_allclose(
        scores, [0.41188167, 0.55766125, 0.9360465, 0.60818349, 0.87201485, 0.80846624], atol=1e-8
    )
    assert in_holdout(["a", "b", "c"], "s", 0.5).tolist() == [True, False, False]


def test_holdout_share_out_of_range() -> None:
    with pytest.raises(PolicyError, match=r"holdout\.share"):
        in_holdout(["a"], "s", 1.5)
