"""Generate a whole synthetic win-back world and write it as a data directory.

`generate_world` returns the five contract tables, the offer catalog, the ground truth (true
conversion probability of every option for every past contact) and the `TrueResponseModel`;
`write_world` writes the tables with `features.datadir.write_data_dir` and the ground truth
beside them as `ground_truth.parquet`, which nothing in training may read.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import constants as c
from features.datadir import write_data_dir
from features.errors import FeaturesError
from features.offers import OfferCatalog
from features.synthetic import config as cfg
from features.synthetic.campaigns import CampaignHistory, simulate_campaigns
from features.synthetic.catalog import default_catalog
from features.synthetic.config import WorldConfig
from features.synthetic.ids import (
    arrow_column,
    fixed_width_ids,
    id_width,
    labels,
    seconds_to_datetime,
)
from features.synthetic.population import FRICTION_TYPES, Population, simulate_population
from features.synthetic.truth import TrueResponseModel

# population event codes (friction types, then visit) -> index in EVENT_TYPES
_POP_EVENT = np.array([c.EVENT_TYPES.index(t) for t in (*FRICTION_TYPES, "visit")], np.int8)
MAX_CUSTOMERS = 50_000_000


@dataclass(frozen=True)
class IdStart:
    """Where a world's id sequences start, and how many customers the whole world has (the
    customer id width): a block of a world generated in blocks continues its sequences."""

    customer: int = 0
    order: int = 0
    contact: int = 0
    event: int = 0
    total_customers: int = 0


@dataclass
class SyntheticWorld:
    """A generated world: tables, catalog, answer key and the model that produced it."""

    config: WorldConfig
    tables: dict[str, pd.DataFrame]
    ground_truth: pd.DataFrame
    catalog: OfferCatalog
    model: TrueResponseModel
    population: Population


def _customers(pop: Population, cid: pa.Array) -> pd.DataFrame:
    return pd.DataFrame(
        {
            c.CUSTOMER_ID: arrow_column(cid),
            c.SIGNUP_TS: seconds_to_datetime(pop.signup_s),
            c.REGION: arrow_column(labels(pop.region, cfg.REGIONS)),
            c.ACQUISITION_CHANNEL: arrow_column(labels(pop.acquisition, cfg.ACQUISITION_CHANNELS)),
        }
    )


def _orders(pop: Population, hist: CampaignHistory, cid: pa.Array, start: int = 0) -> pd.DataFrame:
    cust = np.concatenate([pop.order_cust, hist.orders.get("cust", np.int32)])
    gross = np.concatenate([pop.order_gross, hist.orders.get("gross", np.float64)])
    disc = np.concatenate([pop.order_discount, hist.orders.get("discount", np.float64)])
    cat = np.concatenate([pop.order_category, hist.orders.get("category", np.int8)])
    ts = np.concatenate([pop.order_ts, hist.orders.get("ts", np.int64)])
    revenue = np.round(gross - disc, 2)
    margin = np.round(gross * cfg.CATEGORY_MARGIN[cat] - disc, 2)
    return pd.DataFrame(
        {
            c.ORDER_ID: arrow_column(
                fixed_width_ids(
                    "o", np.arange(start, start + len(cust)), id_width(start + len(cust), 9)
                )
            ),
            c.CUSTOMER_ID: arrow_column(cid.take(pa.array(cust))),
            c.ORDER_TS: seconds_to_datetime(ts),
            c.REVENUE: revenue,
            c.MARGIN: margin,
            c.CATEGORY: arrow_column(labels(cat, cfg.CATEGORIES)),
            c.DISCOUNT_AMOUNT: disc,
        }
    )


def _contacts(
    hist: CampaignHistory,
    cid: pa.Array,
    model: TrueResponseModel,
    waves: np.ndarray,
    start: int = 0,
) -> tuple[pd.DataFrame, pa.Array]:
    rows = hist.contacts
    n = len(rows.get("cust", np.int32))
    kid = fixed_width_ids("k", np.arange(start, start + n), id_width(start + n, 8))
    wave_names = [f"winback-{str(np.datetime64(int(t), 's'))[:10]}" for t in waves]
    frame = pd.DataFrame(
        {
            c.CONTACT_ID: arrow_column(kid),
            c.CUSTOMER_ID: arrow_column(cid.take(pa.array(rows.get("cust", np.int32)))),
            c.TS: seconds_to_datetime(rows.get("ts", np.int64)),
            c.CHANNEL: arrow_column(labels(rows.get("channel", np.int8), c.CHANNELS)),
            c.CAMPAIGN_ID: arrow_column(labels(rows.get("wave", np.int16), wave_names)),
            c.OFFER_ID: arrow_column(labels(rows.get("offer", np.int16), model.option_ids)),
            c.STAGE: rows.get("stage", np.int64),
            c.PROPENSITY: np.round(rows.get("propensity", np.float64), 6),
        }
    )
    return frame, kid


def _events(
    pop: Population,
    hist: CampaignHistory,
    cid: pa.Array,
    kid: pa.Array,
    end_s: int,
    start: int = 0,
) -> pd.DataFrame:
    left = pop.opt_out_s[:, 0] < end_s  # organic email unsubscribes leave an event too
    unsub_cust = np.flatnonzero(left).astype(np.int32)
    ev = hist.events
    cust = np.concatenate([pop.event_cust, unsub_cust, ev.get("cust", np.int32)])
    ts = np.concatenate([pop.event_ts, pop.opt_out_s[left, 0], ev.get("ts", np.int64)])
    kind = np.concatenate(
        [
            _POP_EVENT[pop.event_type],
            np.full(len(unsub_cust), c.EVENT_TYPES.index("unsubscribe"), np.int8),
            ev.get("type", np.int8),
        ]
    )
    contact = np.concatenate(
        [np.full(len(pop.event_cust) + len(unsub_cust), -1, np.int64), ev.get("contact", np.int64)]
    )
    has = contact >= 0
    linked = (
        kid.take(pa.array(np.where(has, contact, 0)))
        if len(kid)
        else pa.nulls(len(contact), pa.string())
    )
    linked = pc.if_else(pa.array(has), linked, pa.scalar(None, pa.string()))
    return pd.DataFrame(
        {
            c.EVENT_ID: arrow_column(
                fixed_width_ids(
                    "e", np.arange(start, start + len(cust)), id_width(start + len(cust), 9)
                )
            ),
            c.CUSTOMER_ID: arrow_column(cid.take(pa.array(cust))),
            c.TS: seconds_to_datetime(ts),
            c.EVENT_TYPE: arrow_column(labels(kind, c.EVENT_TYPES)),
            c.CONTACT_ID: arrow_column(linked),
        }
    )


def _consent(pop: Population, hist: CampaignHistory, cid: pa.Array, end_s: int) -> pd.DataFrame:
    n, k = pop.opted_in.shape
    cust0 = np.repeat(np.arange(n, dtype=np.int32), k)
    chan0 = np.tile(np.arange(k, dtype=np.int8), n)
    status0 = np.where(pop.opted_in.reshape(-1), 0, 1).astype(np.int8)
    ts0 = np.repeat(pop.signup_s, k)
    organic = np.flatnonzero(pop.opt_out_s[:, 0] < end_s)
    cust = np.concatenate([cust0, organic.astype(np.int32), hist.consent.get("cust", np.int32)])
    chan = np.concatenate(
        [chan0, np.zeros(len(organic), np.int8), hist.consent.get("channel", np.int8)]
    )
    status = np.concatenate([status0, np.ones(len(cust) - len(cust0), np.int8)])
    ts = np.concatenate([ts0, pop.opt_out_s[organic, 0], hist.consent.get("ts", np.int64)])
    # an organic and a campaign opt-out can coincide to the second: keep one row per key
    key = np.stack([cust.astype(np.int64), chan.astype(np.int64), ts], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    if len(first) < len(cust):
        keep = np.sort(first)
        cust, chan, status, ts = cust[keep], chan[keep], status[keep], ts[keep]
    return pd.DataFrame(
        {
            c.CUSTOMER_ID: arrow_column(cid.take(pa.array(cust))),
            c.CHANNEL: arrow_column(labels(chan, c.CHANNELS)),
            c.STATUS: arrow_column(labels(status, c.CONSENT_STATUSES)),
            c.UPDATED_TS: seconds_to_datetime(ts),
        }
    )


def _ground_truth(
    contacts: pd.DataFrame, hist: CampaignHistory, model: TrueResponseModel
) -> pd.DataFrame:
    cols: dict[str, object] = {
        c.CONTACT_ID: contacts[c.CONTACT_ID],
        c.CUSTOMER_ID: contacts[c.CUSTOMER_ID],
        c.TS: contacts[c.TS],
    }
    for j, option in enumerate(model.option_ids):
        cols[f"p_{option}"] = hist.truth_p[:, j]
    cols["revenue_if_convert"] = np.round(hist.truth_revenue, 4)
    cols["margin_if_convert"] = np.round(hist.truth_margin, 4)
    return pd.DataFrame(cols)


def generate_world(
    n_customers: int,
    seed: int,
    catalog: OfferCatalog | None = None,
    ids: IdStart | None = None,
) -> SyntheticWorld:
    """Draw a complete world of `n_customers` from `seed` (same seed, same world).

    `ids` (default: every sequence from 0) numbers the ids of a block of a larger world
    (`generate_partitioned`); the draws do not depend on it.

    Raises:
        FeaturesError: when `n_customers` is not a positive number within limits.
    """
    if not 1 <= n_customers <= MAX_CUSTOMERS:
        raise FeaturesError(
            f"customers: must be between 1 and {MAX_CUSTOMERS:,}, got {n_customers}"
        )
    catalog = catalog or default_catalog()
    conf = WorldConfig(n_customers=n_customers, seed=seed)
    rng = np.random.default_rng(seed)
    pop = simulate_population(rng, conf)
    model = TrueResponseModel(catalog)
    hist = simulate_campaigns(rng, pop, catalog, model, conf)
    ids = ids or IdStart()
    cid = fixed_width_ids(
        "c",
        np.arange(ids.customer, ids.customer + n_customers),
        id_width(max(n_customers, ids.total_customers)),
    )
    contacts, kid = _contacts(hist, cid, model, conf.wave_times(), ids.contact)
    tables = {
        c.CUSTOMERS: _customers(pop, cid),
        c.ORDERS: _orders(pop, hist, cid, ids.order),
        c.CONTACTS: contacts,
        c.EVENTS: _events(pop, hist, cid, kid, conf.end_s, ids.event),
        c.CONSENT: _consent(pop, hist, cid, conf.end_s),
    }
    truth = _ground_truth(contacts, hist, model)
    return SyntheticWorld(conf, tables, truth, catalog, model, pop)


WORLD_FILE = "world.json"
"""What regenerates a world (customers and seed): `load_world` rebuilds its latent traits."""


def write_world(world: SyntheticWorld, out: Path, fmt: str = "parquet") -> Path:
    """Write the data directory, `ground_truth.parquet` and `world.json` into `out`."""
    if fmt not in ("parquet", "csv"):
        raise FeaturesError(f"format: must be 'parquet' or 'csv', got '{fmt}'")
    out = Path(out)
    (out / "partitions.json").unlink(missing_ok=True)  # a previous partitioned world
    for name in (*c.TABLES, "ground_truth"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in c.TABLES:  # a previous world in the other format would make two copies
        for suffix in c.TABLE_SUFFIXES:
            stale = out / f"{name}{suffix}"
            if suffix != f".{fmt}" and stale.is_file():
                stale.unlink()
    write_data_dir(out, world.tables, world.catalog, fmt=fmt)
    path = out / c.GROUND_TRUTH_FILE
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(world.ground_truth, preserve_index=False), tmp)
    tmp.replace(path)
    manifest = {"customers": world.config.n_customers, "seed": world.config.seed}
    (out / WORLD_FILE).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
    return out


def load_world(data_dir: Path) -> SyntheticWorld:
    """The world a data directory was generated from, with its latent traits, regenerated
    from `world.json` (same customers and seed, same world).

    Raises:
        FeaturesError: no readable `world.json` (not a generated world, or one written before
            it existed: generate it again).
    """
    path = Path(data_dir) / WORLD_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        n, seed = int(manifest["customers"]), int(manifest["seed"])
        block = int(manifest.get("block_customers") or n)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FeaturesError(
            f"{path}: cannot read the world's manifest ({exc}); only a directory written by "
            "`winback generate` has one (generate the world again)"
        ) from None
    if n > block:
        raise FeaturesError(
            f"{path}: a world of {n:,} customers generated in blocks of {block:,} cannot be "
            "regenerated in memory; generate one of at most that many customers to play it"
        )
    return generate_world(n, seed)


def world_summary(world: SyntheticWorld) -> dict[str, float]:
    """Headline figures of a world: row counts and a few marginal statistics."""
    t = world.tables
    n = len(t[c.CUSTOMERS])
    contacts = t[c.CONTACTS]
    out: dict[str, float] = {name: float(len(df)) for name, df in t.items()}
    out["orders per customer"] = len(t[c.ORDERS]) / n
    last = world.population.order_ts[world.population.order_start[1:] - 1]
    lapsed = (world.config.end_s - last) > world.config.lapse_days * cfg.DAY
    out["share lapsed (organic history)"] = float(lapsed.mean())
    if len(contacts):
        offer = contacts[c.OFFER_ID].to_numpy()
        options = np.asarray(world.model.option_ids)
        p = world.ground_truth[[f"p_{o}" for o in options]].to_numpy()
        chosen = p[np.arange(len(offer)), pd.Index(options).get_indexer(offer)]
        out["holdout share of contacts"] = float((offer == c.HOLDOUT).mean())
        out["true conversion of assigned option"] = float(chosen.mean())
    return out
