"""Names used across winback: table and column names, enumerations, reserved offer ids.

Every module refers to columns through these constants, so that a rename happens in one place.
"""

from __future__ import annotations

from typing import Final

# --- tables of a data directory -------------------------------------------------------------
CUSTOMERS: Final = "customers"
ORDERS: Final = "orders"
CONTACTS: Final = "contacts"
EVENTS: Final = "events"
CONSENT: Final = "consent"
TABLES: Final = (CUSTOMERS, ORDERS, CONTACTS, EVENTS, CONSENT)
OFFERS_FILE: Final = "offers.yaml"
GROUND_TRUTH_FILE: Final = "ground_truth.parquet"
TABLE_SUFFIXES: Final = (".parquet", ".csv")

# --- columns ------------------------------------------------------------------------------------
CUSTOMER_ID: Final = "customer_id"
SIGNUP_TS: Final = "signup_ts"
REGION: Final = "region"
ACQUISITION_CHANNEL: Final = "acquisition_channel"

ORDER_ID: Final = "order_id"
ORDER_TS: Final = "order_ts"
REVENUE: Final = "revenue"
MARGIN: Final = "margin"
CATEGORY: Final = "category"
UNKNOWN_CATEGORY: Final = "unknown"
MARGIN_ASSUMED: Final = "margin_assumed"
DATASET_FILE: Final = "dataset.json"
DEFAULT_MARGIN_RATE: Final = 0.25
DISCOUNT_AMOUNT: Final = "discount_amount"

CONTACT_ID: Final = "contact_id"
TS: Final = "ts"
CHANNEL: Final = "channel"
CAMPAIGN_ID: Final = "campaign_id"
OFFER_ID: Final = "offer_id"
STAGE: Final = "stage"
PROPENSITY: Final = "propensity"

EVENT_ID: Final = "event_id"
EVENT_TYPE: Final = "type"

STATUS: Final = "status"
UPDATED_TS: Final = "updated_ts"

# --- enumerations ---------------------------------------------------------------------------
CHANNELS: Final = ("email", "sms", "push", "in_app", "direct_mail")
EVENT_TYPES: Final = (
    "open",
    "click",
    "visit",
    "unsubscribe",
    "complaint",
    "support_ticket",
    "delivery_issue",
    "stockout",
)
CONSENT_STATUSES: Final = ("opted_in", "opted_out")
OPTED_IN: Final = "opted_in"
OPTED_OUT: Final = "opted_out"

OFFER_TYPES: Final = (
    "percent_discount",
    "amount_discount",
    "free_shipping",
    "bundle",
    "extended_warranty",
    "expert_consult",
    "content",
    "none",
)

# Offer ids that are not catalog entries: a message without incentive, and a randomized
# control that received nothing at all.
NO_INCENTIVE: Final = "none"
HOLDOUT: Final = "holdout"
RESERVED_OFFER_IDS: Final = (NO_INCENTIVE, HOLDOUT)

# Value tiers, lowest first; offers state a min/max tier in this order.
VALUE_TIERS: Final = ("occasional", "mid", "high")
LAPSE_STATES: Final = ("active", "at_risk", "lapsed", "churned")
