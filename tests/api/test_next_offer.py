"""GET /v1/customers/{id}/next-offer: flat JSON, dedupe within the window, Liquid rendering."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import liquid
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from serving.api import create_app
from serving.settings import ServingSettings
from serving.store.models import Decision as DecisionRow
from tests.api.conftest import (
    CLIENT,
    CUSTOMERS,
    POLICY_YAML,
    Clock,
    FakeSnapshots,
    make_snapshot,
    runtime_of,
)

TEMPLATE = """\
{% if send %}Hello! {{ offer_title }}{% if offer_type == "percent_discount" %} \
({{ offer_value }}% off){% endif %} - picked for {{ top_category | default: "you" }}.\
{% else %}(no offer: {{ reason }}){% endif %}"""


def _next(client: TestClient, cid: str = "c1", campaign: str = "spring") -> dict:
    r = client.get(
        f"/v1/customers/{cid}/next-offer",
        params={"channel": "email", "campaign": campaign},
        headers=CLIENT,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _contacts(client: TestClient, cid: str) -> int:
    rt = runtime_of(client)
    return len(rt.store.customer_states([cid], rt.clock(), 30)[cid].contacts)


def test_renders_a_real_liquid_template(client: TestClient) -> None:
    body = _next(client)
    html = liquid.parse(TEMPLATE).render(**body)
    assert html == "Hello! Our buying guide - picked for books."
    none = _next(client, cid="nobody")
    assert liquid.parse(TEMPLATE).render(**none) == "(no offer: unknown_customer)"
    no_consent = _next(client, cid="c-noconsent")  # the guardrail, not "no allowed option"
    assert liquid.parse(TEMPLATE).render(**no_consent) == "(no offer: consent_unknown)"


def test_repeated_calls_in_the_window_return_the_same_decision_once(
    client: TestClient, clock: Clock
) -> None:
    first = _next(client)
    clock.advance(seconds=30)
    text_part = _next(client)  # the text part of the same e-mail, fetched later
    assert text_part == first
    assert _contacts(client, "c1") == 1
    other = _next(client, campaign="summer")  # another campaign is another decision
    assert other["decision_id"] != first["decision_id"]
    assert other["send"] is False  # and the cap of one contact is already taken
    assert other["reason"] == "cap_across_channels"
    clock.advance(minutes=11)  # past the 600 s window: a new decision
    assert _next(client)["decision_id"] != first["decision_id"]
    assert _contacts(client, "c1") == 1


def test_concurrent_calls_count_once(client: TestClient) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(lambda _: _next(client, cid="c3"), range(16)))
    assert len({b["decision_id"] for b in bodies}) == 1
    assert all(b["send"] for b in bodies)
    assert _contacts(client, "c3") == 1


def test_a_held_out_customer_is_never_handed_the_replaced_offer(
    files: dict[str, Path], settings: ServingSettings, clock: Clock
) -> None:
    """The holdout row logs the contact it replaced; neither the first answer nor the repeat
    served from the log within the window may show it (a template would send it)."""
    files["policy"].write_text(
        POLICY_YAML.replace(
            "holdout: {share: 0.0, salt: tests}", "holdout: {share: 0.999, salt: tests}"
        ),
        encoding="utf-8",
    )
    app = create_app(settings, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)
    with TestClient(app) as client:
        first = _next(client)
        clock.advance(seconds=30)
        again = _next(client)
        rt = runtime_of(client)
        with Session(rt.store.engine) as s:
            row = s.get(DecisionRow, first["decision_id"])
        contacts = _contacts(client, "c1")
    assert again == first
    assert first["action"] == "holdout" and first["send"] is False
    assert first["offer_id"] is None and first["channel"] is None
    assert first["offer_title"] is None and liquid.parse(TEMPLATE).render(**first).startswith(
        "(no offer: holdout_group)"
    )
    assert row is not None and (row.offer_id, row.channel) == ("guide", "email")
    assert contacts == 0


def test_a_campaign_id_of_the_longest_allowed_length_is_served(store_client: TestClient) -> None:
    campaign = "w" * 128  # the request id it is logged under must still fit its column
    first = _next(store_client, campaign=campaign)
    again = _next(store_client, campaign=campaign)
    assert first["send"] is True and again["decision_id"] == first["decision_id"]
