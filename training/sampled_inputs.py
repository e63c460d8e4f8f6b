"""Training inputs built partition by partition, fitted on a seeded, stratified customer sample.

`winback train DATA --sample-customers N` for data larger than memory. DATA is a partitioned
data directory (`features.partitioned`; an unpartitioned one is read whole and handled as one
partition). The run:

1. freezes what must be the same for every partition, from a streaming pass over a few
   columns (`features.frozen`): the cutoff protocol (data end, first order), the feature sets'
   category vocabularies, and the time after which contacts are held out (the 70% quantile of
   every contact's time, the split `training.fit.response_split` makes on the whole data);
2. reads each partition (one in memory at a time; with `n_jobs` > 1 that many worker
   processes read partitions side by side) and, before any feature is computed, gives each
   customer with learnable rows (the protocol's origins; contacts up to the held-out time) a
   stratum, `label x treatment`, from labels and contacts alone
   (`features.frames.reactivation_labels`, `contact_conversions`): label 1 when the customer
   bought again at any training origin (without a reactivation frame: converted after any
   training contact), treatment the offer of the customer's latest training contact (`none`
   when never contacted); and a uniform number from a seeded hash of the customer id
   (`sample:<seed>:<id>`, the same on every machine and partition);
3. keeps the partition's candidates: hash number below a bound a little above
   N / population, or among the ceil(rate x stratum size) + 2 smallest numbers of their
   stratum in the partition (a small stratum's share can exceed what the bound keeps of it);
4. builds features (`training.protocol.protocol_frame`, `features.frames.offer_response_frame`)
   for the candidates' learnable rows only, and for every held-out row (the cutoff's
   customers; later contacts), which is written to Parquet in a scratch folder, never sampled.
   The features of the other customers' learnable rows are never computed: at 10M customers
   and N = 200,000 that is 2-3% of the origins' rows instead of all of them;
5. takes from each stratum its share of N (largest remainders, so the strata sum to N): the
   customers with the smallest hash numbers among the candidates (merged in partition order,
   dropping those that can no longer be drawn, so memory holds about 1.25 N customers'
   learnable rows, never the population's). A stratum could in principle end short of its
   share (a customer needed at the end was not a candidate); the report's `target` and
   `sampled` columns say so;
6. fits on the sampled customers' rows (every row of a chosen customer) and evaluates on all
   held-out rows (`training.pipeline`): the reactivation metrics partition by partition, the
   held-out contacts together (the bootstrap intervals resample all of them).

What was used (N, seed, population, per-stratum population / target / sampled counts) is
`SampleReport`, logged with the MLflow run.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pandas.api.types import is_integer_dtype

from features import constants as c
from features import modeling_frame as mf
from features.config import FeatureConfig, FeatureConfigError
from features.dataset import DataSet
from features.frames import Frame, offer_response_frame
from features.partitions import partition_dir_name
from training.errors import TrainingError
from training.fit import RESPONSE_TEST_AFTER, RESPONSE_TRAIN_UNTIL
from training.protocol import CutoffProtocol, protocol_between

log = logging.getLogger("winback.training")

KEEP_MARGIN = 1.25
"""Customers kept while streaming: hash number below KEEP_MARGIN x N / population (+ a little),
so every stratum can still be filled to its share at the end."""
NO_TREATMENT = "none"
RESPONSE_TEST_SHARE = 0.3  # as training.fit.response_split


@dataclass
class SampleReport:
    """The customer sample a run was fitted on."""

    requested: int
    seed: int
    population: int
    """Customers with at least one row the model may learn from."""
    sampled: int
    strata: pd.DataFrame
    """Index (label, treatment); columns population, target, sampled."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of the partition pass's steps, summed over partitions (and workers)."""

    def to_params(self) -> dict[str, str]:
        return {
            "sample.customers_requested": str(self.requested),
            "sample.customers": str(self.sampled),
            "sample.population": str(self.population),
            "sample.seed": str(self.seed),
            "sample.stratified_by": "label x treatment",
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                **self.to_params(),
                "strata": json.loads(self.strata.reset_index().to_json(orient="records")),
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            },
            indent=2,
        )


@dataclass
class HeldOut:
    """Held-out rows of every partition, spilled to Parquet (one file per partition)."""

    folder: Path
    reactivation_spec: mf.FrameSpec | None = None
    offer_response_spec: mf.FrameSpec | None = None
    reactivation_files: list[Path] = field(default_factory=list)
    offer_response_files: list[Path] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: {"reactivation": 0, "offer_response": 0})
    """Held-out rows evaluated: the cutoff's customers not contacted in its label window (as
    `training.fit.reactivation_split` tests), and the later contacts."""
    positives: int = 0
    """Held-out reactivation rows labelled 1."""

    def reactivation_frames(self) -> Iterator[Frame]:
        """The held-out reactivation rows, one partition at a time."""
        assert self.reactivation_spec is not None
        for path in self.reactivation_files:
            yield Frame(pd.read_parquet(path), self.reactivation_spec)

    def offer_response_frame(self) -> Frame | None:
        """Every held-out contact in one frame."""
        if self.offer_response_spec is None or not self.offer_response_files:
            return None
        df = pd.concat([pd.read_parquet(p) for p in self.offer_response_files], ignore_index=True)
        return Frame(df, self.offer_response_spec)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _hash_numbers(ids: pd.Series, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per customer id, from a seeded, fixed-key hash."""
    salted = f"sample:{seed}:" + ids.astype(str)
    h = pd.util.hash_pandas_object(salted, index=False).to_numpy(np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def strata(react_fit: pd.DataFrame | None, resp_fit: pd.DataFrame | None) -> pd.DataFrame:
    """Per customer with learnable rows: label (0/1) and treatment (latest training offer).

    Indexed by customer id (text), or by customer code when `customer_id` holds integer codes.
    """
    parts = []
    if react_fit is not None and len(react_fit):
        parts.append(react_fit.groupby(c.CUSTOMER_ID, sort=False)[mf.LABEL].max().astype(int))
    conv = None
    treat = None
    if resp_fit is not None and len(resp_fit):
        g = resp_fit.sort_values(c.TS, kind="stable").groupby(c.CUSTOMER_ID, sort=False)
        treat = g[c.OFFER_ID].last().astype(str)
        conv = g[mf.CONVERTED].max().astype(int)
    label = parts[0] if parts else conv
    if label is None:
        return pd.DataFrame(columns=["label", "treatment"])
    if parts and conv is not None:  # contacted customers without a reactivation row
        label = label.combine_first(conv)
    ids = label.index.union(treat.index) if treat is not None else label.index
    out = pd.DataFrame(index=ids)
    out["label"] = label.reindex(out.index).fillna(0).astype(int).to_numpy()
    tr = treat.reindex(out.index) if treat is not None else pd.Series(index=out.index)
    out["treatment"] = tr.fillna(NO_TREATMENT).astype(str).to_numpy()
    if not is_integer_dtype(out.index.dtype):  # customer codes stay numbers for the caller
        out.index = out.index.astype(str)
    return out


def allocate(population: pd.Series, n: int) -> pd.Series:
    """Proportional allocation of `n` over strata of sizes `population`, largest remainders."""
    total = int(population.sum())
    if n >= total:
        return population.copy()
    exact = population * n / total
    base = np.floor(exact).astype(int)
    rest = n - int(base.sum())
    order = (exact - base).sort_values(ascending=False, kind="stable").index[:rest]
    base[order] += 1
    return base


@dataclass
class _Frozen:
    protocol: CutoffProtocol | None
    end: pd.Timestamp
    fs_react: object
    fs_offer: object
    test_after: float | None
    train_until: str | None
    customers: int


def _contact_times(times: np.ndarray) -> tuple[float | None, str | None]:
    """(held-out time, latest training contact) of `training.fit.response_split` on all."""
    if len(np.unique(times)) <= 1:
        return None, None
    after = float(np.quantile(times, 1 - RESPONSE_TEST_SHARE))
    train = times[times <= after]
    if not len(train) or len(train) == len(times):
        return None, None
    return after, pd.Timestamp(int(train.max())).isoformat()


_Stamp = pd.Timestamp | None


def _part_times(directory: Path, part: int) -> tuple[_Stamp, _Stamp, _Stamp, _Stamp, np.ndarray]:
    """One partition's times the freeze needs, each table read once (the columns as
    validation coerces them, UTC, tz-naive, as the in-memory path reads them): the first and
    the last order, the last event, the last contact and every contact time (ns)."""
    from features import frozen
    from features.partition_layout import read_partition_table

    def column(table: str, col: str) -> pd.Series:
        raw = read_partition_table(directory, table, part, (col,))
        if raw is None or not len(raw):
            return pd.Series([], dtype="datetime64[ns]")
        return frozen._coerced(table, raw, (col,))[col].dropna()

    orders = column(c.ORDERS, c.ORDER_TS)
    first, last = (
        (pd.Timestamp(orders.min()), pd.Timestamp(orders.max()))
        if len(orders)
        else (
            None,
            None,
        )
    )
    events = column(c.EVENTS, c.TS)
    last_event = pd.Timestamp(events.max()) if len(events) else None
    contacts = column(c.CONTACTS, c.TS)
    last_contact = pd.Timestamp(contacts.max()) if len(contacts) else None
    times = contacts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return first, last, last_event, last_contact, times


def _part_categories(
    directory: Path, as_ofs: tuple[pd.Timestamp, ...], part: int
) -> list[Counter[str]]:
    """Per `as_of`, one partition's orders per category placed strictly before it
    (`features.frozen.category_counts`), the orders read once for all of them."""
    from features import frozen
    from features.partition_layout import read_partition_table

    cols = (c.ORDER_TS, c.CATEGORY)
    out: list[Counter[str]] = [Counter() for _ in as_ofs]
    raw = read_partition_table(directory, c.ORDERS, part, cols)
    if raw is None or not len(raw):
        return out
    df = frozen._coerced(c.ORDERS, raw, cols)
    for counts, as_of in zip(out, as_ofs, strict=True):
        for name, n in df.loc[df[c.ORDER_TS] < as_of, c.CATEGORY].value_counts().items():
            counts[str(name)] += int(n)
    return out


def _latest(stamps: Iterable[pd.Timestamp | None]) -> pd.Timestamp | None:
    found = [s for s in stamps if s is not None]
    return max(found) if found else None


def _freeze_partitioned(
    directory: Path,
    horizon: int,
    cutoff: str | pd.Timestamp | None,
    population: str,
    cfg: FeatureConfig,
    n_jobs: int = 1,
) -> _Frozen:
    """The frozen values from two passes over the partitions, each in `n_jobs` worker
    processes: the times (orders, contacts and events read once), then the category counts
    before both vocabularies' as-of times (orders read once more). The same values as
    `features.frozen`'s one-value-per-pass functions (`data_end`, `last_contact_ts`,
    `resolve_feature_set`), which read the orders four times on one core."""
    from features import frozen
    from features.partition_layout import read_layout
    from features.partitioned import map_partitions

    layout = read_layout(directory)
    parts = range(layout.n_partitions)
    times_of = list(map_partitions(functools.partial(_part_times, directory), parts, n_jobs))
    last_contact = _latest(x[3] for x in times_of)
    end = _latest([_latest(x[1] for x in times_of), last_contact, _latest(x[2] for x in times_of)])
    if end is None:
        raise FeatureConfigError(f"{directory}: no orders, contacts or events to frame")
    starts = [x[0] for x in times_of if x[0] is not None]
    first = min(starts) if starts else None
    try:
        protocol = protocol_between(end, first, horizon, cutoff, population)
    except TrainingError:
        if cutoff is not None:
            raise
        protocol = None
    offer_as_of = (last_contact or end) + pd.Timedelta(1, "ns")
    as_ofs = (offer_as_of,) if protocol is None else (offer_as_of, protocol.cutoff_ts)
    if frozen.needs_vocabulary():
        task = functools.partial(_part_categories, directory, as_ofs)
        counts: list[Counter[str]] = [Counter() for _ in as_ofs]
        for part_counts in map_partitions(task, parts, n_jobs):
            for total, more in zip(counts, part_counts, strict=True):
                total.update(more)
    else:
        counts = [Counter() for _ in as_ofs]
    fs_offer = frozen.with_counted_vocabulary(counts[0], None, cfg)
    fs_react = frozen.with_counted_vocabulary(counts[1], None, cfg) if protocol else None
    allt = np.concatenate([x[4] for x in times_of]) if times_of else np.zeros(0, np.int64)
    after, until = _contact_times(allt)
    customers = layout.row_counts.get(c.CUSTOMERS, 0)
    return _Frozen(protocol, end, fs_react, fs_offer, after, until, customers)


def _freeze_whole(
    data: DataSet,
    engine: object,
    horizon: int,
    cutoff: str | pd.Timestamp | None,
    population: str,
) -> _Frozen:
    from features.build import resolve_feature_set
    from features.frames import data_end

    end = data_end(data)
    first = pd.Timestamp(data.orders[c.ORDER_TS].min()) if len(data.orders) else None
    try:
        protocol = protocol_between(end, first, horizon, cutoff, population)
    except TrainingError:
        if cutoff is not None:
            raise
        protocol = None
    fs_react = resolve_feature_set(engine, protocol.cutoff_ts) if protocol else None  # type: ignore[arg-type]
    times = data.contacts[c.TS].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    last = pd.Timestamp(times.max()) if len(times) else end
    fs_offer = resolve_feature_set(engine, last + pd.Timedelta(1, "ns"))  # type: ignore[arg-type]
    after, until = _contact_times(times)
    return _Frozen(protocol, end, fs_react, fs_offer, after, until, len(data.customers))


def _candidates(pool: pd.DataFrame, counts: pd.Series, rate: float, bound: float) -> pd.DataFrame:
    """The customers that may still be drawn: hash number below `bound`, or among the
    ceil(rate x seen) + 2 smallest numbers of their stratum so far (a small stratum's share
    can exceed what the bound keeps of it)."""
    if not len(pool):
        return pool
    rank = pool.groupby("stratum", sort=False)["u"].rank(method="first")
    room = np.ceil(rate * pool["stratum"].map(counts).to_numpy(dtype=float)) + 2
    return pool[(pool["u"].to_numpy() < bound) | (rank.to_numpy() <= room)]


def _spill(df: pd.DataFrame, folder: Path, part: int) -> Path:
    path = folder / f"{partition_dir_name(part)}.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


@dataclass
class _PartRows:
    """What one partition's pass hands back: narrow sample candidates and their learnable rows
    (features built for them only), the held-out rows spilled to disk."""

    part: int
    counts: pd.Series
    """Customers with learnable rows per stratum ("label|treatment")."""
    cand: pd.DataFrame
    react_fit: pd.DataFrame | None = None
    resp_fit: pd.DataFrame | None = None
    react_spec: mf.FrameSpec | None = None
    resp_spec: mf.FrameSpec | None = None
    held_react: Path | None = None
    held_resp: Path | None = None
    held_rows: dict[str, int] = field(
        default_factory=lambda: {"reactivation": 0, "offer_response": 0}
    )
    positives: int = 0
    margin_assumed: int = 0
    n_orders: int = 0
    assumed_rate: float | None = None
    rows: int = 0
    """Frame rows built (learnable rows of candidates, every held-out row)."""
    seconds: dict[str, float] = field(default_factory=dict)


def _partition_rows(
    part: int,
    source: Path | None,
    data: DataSet | None,
    engine: object | None,
    frozen: _Frozen,
    cfg: FeatureConfig,
    seed: int,
    rate: float,
    bound: float,
    folder: Path,
) -> _PartRows:
    """One partition: strata from labels and contacts alone, then features for the sample
    candidates' learnable rows and for every held-out row (spilled to `folder`).

    `data` (and its `engine`) when the caller holds the data; otherwise partition `part` of the
    partitioned directory `source` is read here (a worker process reads its own)."""
    from features.engine import FeatureEngine
    from features.frames import contact_conversions, reactivation_labels
    from features.partitioned import iter_partitions
    from training.protocol import protocol_frame, protocol_origins

    out = _PartRows(part, pd.Series(dtype=np.int64), pd.DataFrame())
    clock = _Clock(out.seconds)
    if data is None:
        assert source is not None
        data = next(iter(iter_partitions(source, [part]))).data
        assert data is not None  # strict: an invalid partition raised
        clock.lap("read and validate")
    eng: FeatureEngine = engine or FeatureEngine(data, cfg)  # type: ignore[assignment]
    clock.lap("index")
    out.margin_assumed, out.n_orders = data.orders_margin_assumed, len(data.orders)
    out.assumed_rate = data.assumed_margin_rate
    protocol = frozen.protocol
    # 1. who has learnable rows, and their strata: labels and contacts only, no feature
    labels = None
    if protocol is not None:
        labels = reactivation_labels(
            eng,
            protocol_origins(protocol),
            protocol.train_horizon_days,
            population=protocol.population,
            end=frozen.end,
            as_codes=True,  # strata group by customer codes; ids only for the result
        )
    contacts = eng.data.contacts.reset_index(drop=True)
    k_test = np.zeros(len(contacts), dtype=bool)
    k_codes = eng.customer_codes(contacts[c.CUSTOMER_ID])
    contacted = None
    if len(contacts):
        if frozen.test_after is None:
            raise TrainingError(
                "--sample-customers: the contacts carry a single time, so no contacts "
                "are held out by time; train without --sample-customers"
            )
        k_ns = contacts[c.TS].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        k_test = k_ns > frozen.test_after
        contacted = pd.DataFrame(
            {
                c.CUSTOMER_ID: k_codes,
                c.TS: contacts[c.TS].to_numpy(),
                c.OFFER_ID: contacts[c.OFFER_ID].to_numpy(),
                mf.CONVERTED: contact_conversions(eng, codes=k_codes),
            }
        )[~k_test]
    st = strata(labels, contacted)  # indexed by customer code
    st.index = pd.Index(eng.customer_ids[st.index.to_numpy(np.int64)].astype(str), dtype=object)
    st["u"] = _hash_numbers(pd.Series(st.index, dtype=object), seed)
    st["stratum"] = st["label"].astype(str) + "|" + st["treatment"]
    out.counts = st["stratum"].value_counts()
    out.cand = _candidates(st, out.counts, rate, bound)
    del st, labels, contacted
    chosen = np.asarray(pd.Index(eng.customer_ids.astype(str)).isin(out.cand.index))
    clock.lap("strata and candidates")
    # 2. features: the candidates' learnable rows, every held-out row
    if protocol is not None:
        frame = protocol_frame(eng, protocol, frozen.fs_react, frozen.end, train_customers=chosen)  # type: ignore[arg-type]
        out.react_spec = frame.spec
        test = (frame.data[mf.CUTOFF] == protocol.cutoff_ts).to_numpy()
        if test.any():
            rows = frame.data[test]
            out.held_react = _spill(rows, folder, part)
            clean = ~rows[mf.CONTACTED_IN_WINDOW].astype(bool)  # as the split tests
            out.held_rows["reactivation"] = int(clean.sum())
            out.positives = int(rows.loc[clean, mf.LABEL].sum())
        out.react_fit = frame.data[~test]
        out.rows += len(frame.data)
        del frame
        clock.lap("reactivation features")
    if len(contacts):
        wanted = k_test | chosen[k_codes]
        oframe = offer_response_frame(
            eng,
            feature_set=frozen.fs_offer,  # type: ignore[arg-type]
            end=frozen.end,
            rows=wanted,
        )
        out.resp_spec = oframe.spec
        test = k_test[wanted]
        if test.any():
            out.held_resp = _spill_resp(oframe.data[test], folder, part)
            out.held_rows["offer_response"] = int(test.sum())
        out.resp_fit = oframe.data[~test]
        out.rows += len(oframe.data)
        clock.lap("offer-response features")
    return out


class _Clock:
    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.t = into, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0.0) + now - self.t
        self.t = now


def build_sampled_inputs(
    source: Path,
    n_customers: int,
    seed: int,
    horizon_days: int | None = None,
    config: FeatureConfig | None = None,
    cutoff: str | pd.Timestamp | None = None,
    population: str = "all",
    n_jobs: int = 1,
) -> tuple[
    Frame | None, Frame | None, HeldOut, SampleReport, CutoffProtocol | None, dict[str, str]
]:
    """The pass described in the module docstring.

    `n_jobs`: worker processes reading partitions side by side (joblib; each holds one
    partition); the result does not depend on it.
    Returns (reactivation fit frame, offer-response fit frame, held-out rows, sample report,
    protocol, data notes). Raises TrainingError when `n_customers` or `n_jobs` < 1.
    """
    from features.datadir import load_data_dir
    from features.engine import FeatureEngine
    from features.partition_layout import is_partitioned, read_layout

    if n_customers < 1:
        raise TrainingError(f"--sample-customers: must be at least 1, got {n_customers}")
    if n_jobs < 1:
        raise TrainingError(f"--jobs: must be at least 1, got {n_jobs}")
    cfg = config or FeatureConfig()
    h = horizon_days or cfg.horizon_days
    source = Path(source)
    partitioned = is_partitioned(source)
    t_freeze = time.perf_counter()
    if partitioned:
        frozen = _freeze_partitioned(source, h, cutoff, population, cfg, n_jobs)
        n_parts = read_layout(source).n_partitions
    else:
        data = load_data_dir(source)
        whole_engine = FeatureEngine(data, cfg)
        frozen = _freeze_whole(data, whole_engine, h, cutoff, population)
        n_parts = 1
    rate = min(1.0, n_customers / max(frozen.customers, 1))
    bound = min(1.0, KEEP_MARGIN * rate + 1e-3)
    held = HeldOut(Path(tempfile.mkdtemp(prefix="winback-held-out-")))
    kept_react: list[pd.DataFrame] = []
    kept_resp: list[pd.DataFrame] = []
    cand = pd.DataFrame(columns=["label", "treatment", "u", "stratum"])
    counts: pd.Series = pd.Series(dtype=np.int64)
    react_spec = resp_spec = None
    margin_assumed = 0
    n_orders = 0
    assumed_rate = None
    started = time.perf_counter()
    done_rows = 0
    seconds: dict[str, float] = {"freeze": started - t_freeze}
    args = (frozen, cfg, seed, rate, bound, held.folder)
    results: Iterator[_PartRows]
    if not partitioned:
        results = iter([_partition_rows(0, None, data, whole_engine, *args)])
    elif n_jobs == 1 or n_parts == 1:
        results = (_partition_rows(k, source, None, None, *args) for k in range(n_parts))
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=min(n_jobs, n_parts), return_as="generator")(
            delayed(_partition_rows)(k, source, None, None, *args) for k in range(n_parts)
        )
    try:
        for r in results:  # in partition order, whatever the workers' order
            margin_assumed += r.margin_assumed
            n_orders += r.n_orders
            assumed_rate = assumed_rate or r.assumed_rate
            react_spec = r.react_spec or react_spec
            resp_spec = r.resp_spec or resp_spec
            if r.held_react is not None:
                held.reactivation_files.append(r.held_react)
            if r.held_resp is not None:
                held.offer_response_files.append(r.held_resp)
            for key, n in r.held_rows.items():
                held.rows[key] += n
            held.positives += r.positives
            counts = counts.add(r.counts, fill_value=0)
            cand = _candidates(pd.concat([cand, r.cand]), counts, rate, bound)
            ids = set(r.cand.index[r.cand.index.isin(cand.index)])
            if r.react_fit is not None:
                kept_react.append(r.react_fit[r.react_fit[c.CUSTOMER_ID].astype(str).isin(ids)])
            if r.resp_fit is not None:
                kept_resp.append(r.resp_fit[r.resp_fit[c.CUSTOMER_ID].astype(str).isin(ids)])
            done_rows += r.rows
            for key, secs in r.seconds.items():
                seconds[key] = seconds.get(key, 0.0) + secs
            secs = time.perf_counter() - started
            log.info(
                "partition %d/%d: %s frame rows, %s rows/s",
                r.part + 1,
                n_parts,
                f"{done_rows:,}",
                f"{done_rows / secs:,.0f}" if secs > 0 else "-",
            )
    except BaseException:
        held.remove()
        raise
    held.reactivation_spec = react_spec
    if resp_spec is not None:
        held.offer_response_spec = replace(resp_spec, notes=_resp_notes(resp_spec, frozen))
    population_n = counts.astype(int)
    target = allocate(population_n, n_customers)
    chosen_parts = []
    for stratum, want in target.items():
        pool = cand[cand["stratum"] == stratum].sort_values("u", kind="stable")
        chosen_parts.append(pool.iloc[: int(want)])
    chosen = pd.concat(chosen_parts) if chosen_parts else cand.iloc[:0]
    table = pd.DataFrame(
        {
            "population": population_n,
            "target": target,
            "sampled": chosen["stratum"].value_counts().reindex(population_n.index).fillna(0),
        }
    ).astype(int)
    table.index = pd.MultiIndex.from_tuples(
        [tuple(str(k).split("|", 1)) for k in table.index], names=["label", "treatment"]
    )
    report = SampleReport(
        n_customers, seed, int(population_n.sum()), len(chosen), table.sort_index(), seconds
    )
    log.info(
        "partition pass: %s (seconds summed over partitions)",
        ", ".join(f"{k} {v:,.1f}" for k, v in seconds.items()),
    )
    ids = set(chosen.index)
    react = None
    if react_spec is not None and kept_react:
        df = pd.concat(kept_react, ignore_index=True)
        chosen_rows = df[c.CUSTOMER_ID].astype(str).isin(ids)
        react = Frame(df[chosen_rows].reset_index(drop=True), react_spec)
    resp = None
    if resp_spec is not None and kept_resp:
        df = pd.concat(kept_resp, ignore_index=True)
        spec = replace(resp_spec, notes=_resp_notes(resp_spec, frozen))
        resp = Frame(df[df[c.CUSTOMER_ID].astype(str).isin(ids)].reset_index(drop=True), spec)
    notes: dict[str, str] = {}
    if assumed_rate is not None:
        notes["margin_assumed"] = (
            f"{margin_assumed:,} of {n_orders:,} orders carry an assumed margin of "
            f"{assumed_rate:g} x revenue (no margin in the data)"
        )
    return react, resp, held, report, frozen.protocol, notes


def _spill_resp(df: pd.DataFrame, folder: Path, part: int) -> Path:
    sub = folder / "offer_response"
    sub.mkdir(exist_ok=True)
    return _spill(df, sub, part)


def _resp_notes(spec: mf.FrameSpec, frozen: _Frozen) -> dict[str, str]:
    notes = dict(spec.notes)
    if frozen.test_after is not None:
        notes[RESPONSE_TEST_AFTER] = repr(frozen.test_after)
    if frozen.train_until is not None:
        notes[RESPONSE_TRAIN_UNTIL] = frozen.train_until
    return notes


def read_ground_truth(source: Path, contact_ids: pd.Series) -> pd.DataFrame | None:
    """The ground truth rows of `contact_ids` (a file or a partitioned folder), None if absent."""
    path = Path(source) / c.GROUND_TRUTH_FILE
    folder = Path(source) / Path(c.GROUND_TRUTH_FILE).stem
    where = path if path.exists() else folder if folder.is_dir() else None
    if where is None:
        return None
    try:
        ds = pads.dataset(where, format="parquet", partitioning="hive")
        wanted = pa.array(contact_ids.astype(str).unique(), pa.string())
        table = ds.to_table(filter=pads.field(c.CONTACT_ID).isin(wanted))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise TrainingError(f"{where}: cannot read ground truth: {exc}") from None
    return table.to_pandas()
