"""The default offer catalog of the synthetic world (also a sensible starting `offers.yaml`)."""

from __future__ import annotations

from features.offers import OfferCatalog, parse_catalog

DEFAULT_CATALOG_YAML = """\
version: synthetic-1
offers:
  - offer_id: pct10
    type: percent_discount
    value: 10
    cost: {revenue_fraction: 0.10}
    channels: [email, sms, push, in_app]
    title: 10% off your next order
    description: A 10% discount on the whole basket, valid for 30 days.
  - offer_id: pct20
    type: percent_discount
    value: 20
    cost: {revenue_fraction: 0.20}
    channels: [email, sms, direct_mail]
    max_value_tier: mid
    title: 20% off your next order
    description: Our strongest discount, for customers who have not bought in a while.
  - offer_id: freeship
    type: free_shipping
    cost: {fixed: 6.5}
    channels: [email, sms, push, in_app]
    title: Free shipping on your next order
    description: No delivery fee on the next order, whatever its size.
  - offer_id: bundle
    type: bundle
    cost: {revenue_fraction: 0.06, fixed: 2.0}
    channels: [email, push, in_app]
    min_value_tier: mid
    title: A bundle picked for you
    description: Items that go with what you bought before, at a bundle price.
  - offer_id: warranty
    type: extended_warranty
    cost: {fixed: 5.0}
    channels: [email, direct_mail]
    min_value_tier: mid
    title: Two extra years of warranty
    description: Extended warranty on the next order at no charge.
  - offer_id: expert
    type: expert_consult
    cost: {fixed: 12.0}
    channels: [email, sms, direct_mail]
    min_value_tier: high
    title: A personal session with an expert
    description: Thirty minutes with a product expert or concierge, booked when it suits you.
  - offer_id: guide
    type: content
    channels: [email, push, in_app]
    title: What's new for you
    description: A buying guide and the new arrivals in the categories you like.
"""


def default_catalog() -> OfferCatalog:
    """The catalog every generated world is written with."""
    return parse_catalog(DEFAULT_CATALOG_YAML, source="features/synthetic/catalog.py")
