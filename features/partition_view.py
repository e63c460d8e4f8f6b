"""The serving snapshot computed one customer partition at a time.

A customer's features depend only on that customer's rows and on values frozen for the whole
feature set (the favourite_category vocabulary), so the snapshot of a partitioned directory
(`features.partitioned`) is the concatenation, in partition order, of each partition's view
computed by the same `FeatureEngine`, given the vocabulary frozen from every partition first
(`features.frozen.resolve_feature_set`). Within a partition the rows keep the order of the
partition's customers table, which is also the order `load_data_dir` gives the whole
directory (partitions concatenated in order): both paths write the same rows in the same
order, hence the same `features.npy`.

`view_table` is the unit of work (one partition's `DataSet` in, one Arrow table out) that the
Spark engine (`features.spark_features`) runs on its executors; `view_from_tables` turns the
tables back into the `CustomerView` that `features.snapshot.write_snapshot` writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features import constants as c
from features.build import CustomerView, engine_view, to_timestamp
from features.config import FeatureConfig
from features.contract import SCHEMAS
from features.dataset import DataSet
from features.engine import FeatureEngine
from features.featureset import FeatureSet
from features.offers import OfferCatalog
from features.validation import empty_table

PART_ROW = "_row"
"""Position of a row inside its partition's view (Spark may reorder rows; this restores it)."""


def frozen_feature_set(
    directory: Path,
    as_of: pd.Timestamp | datetime | str,
    feature_set: FeatureSet | None = None,
    config: FeatureConfig | None = None,
) -> FeatureSet:
    """The feature set with its vocabulary frozen from every partition (a streaming pass)."""
    from features.frozen import resolve_feature_set

    return resolve_feature_set(Path(directory), to_timestamp(as_of), feature_set, config)


def _empty_data(catalog: OfferCatalog) -> DataSet:
    tables = {name: empty_table(schema) for name, schema in SCHEMAS.items()}
    from features.validation import validate_tables

    valid, _ = validate_tables(tables, catalog.offer_ids)
    return DataSet(
        customers=valid[c.CUSTOMERS],
        orders=valid[c.ORDERS],
        contacts=valid[c.CONTACTS],
        events=valid[c.EVENTS],
        consent=valid[c.CONSENT],
        catalog=catalog,
    )


def view_schema(feature_set: FeatureSet, catalog: OfferCatalog) -> pa.Schema:
    """The Arrow schema of `view_table`: customer_id, the features (float64) in the feature
    set's order, then the decoded state columns, in the engine's own order and types (taken
    from the engine run on no customer, so the schema cannot drift from the engine)."""
    engine = FeatureEngine(_empty_data(catalog))
    _, state = engine.compute(np.zeros(0, np.int64), np.zeros(0, np.int64), feature_set)
    fields = [pa.field(c.CUSTOMER_ID, pa.string())]
    fields += [pa.field(name, pa.float64()) for name in feature_set.columns]
    for name, dtype in state.dtypes.items():
        kind = pa.float64() if pd.api.types.is_float_dtype(dtype) else pa.string()
        fields.append(pa.field(f"state.{name}", kind))
    return pa.schema(fields)


def view_table(
    data: DataSet,
    as_of: pd.Timestamp,
    feature_set: FeatureSet,
    config: FeatureConfig | None = None,
    with_row: bool = False,
) -> pa.Table:
    """One partition's (or a whole directory's) view as Arrow: `view_schema`'s columns.

    `feature_set` must already be frozen (its vocabulary set): an empty vocabulary here would be
    filled from this partition's orders alone. `with_row` appends `PART_ROW`.
    """
    view = engine_view(FeatureEngine(data, config), as_of, feature_set)
    schema = view_schema(feature_set, data.catalog)
    cols: list[pa.Array] = [pa.array(view.features.index.to_numpy(dtype=object), pa.string())]
    matrix = view.features.to_numpy(np.float64)
    cols += [pa.array(matrix[:, j]) for j in range(matrix.shape[1])]
    for f in list(schema)[1 + matrix.shape[1] :]:
        s = view.state[f.name.removeprefix("state.")]
        values = s.to_numpy(dtype=np.float64) if f.type == pa.float64() else s.astype(object)
        cols.append(pa.array(values, f.type, from_pandas=True))
    table = pa.Table.from_arrays(cols, schema=schema)
    if with_row:
        table = table.append_column(PART_ROW, pa.array(np.arange(len(table), dtype=np.int64)))
    return table


def view_from_tables(
    tables: Iterable[pa.Table], as_of: pd.Timestamp, feature_set: FeatureSet
) -> CustomerView:
    """The `CustomerView` of partition views concatenated in the order given (the snapshot
    writer's input): the same dtypes `build_customer_view` gives."""
    table = pa.concat_tables(list(tables))
    if PART_ROW in table.column_names:
        table = table.drop_columns([PART_ROW])
    index = pd.Index(
        table.column(c.CUSTOMER_ID).to_numpy(zero_copy_only=False),
        name=c.CUSTOMER_ID,
        dtype="string",
    )
    matrix = np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False) for n in feature_set.columns]
    ).reshape(len(index), len(feature_set.columns))
    features = pd.DataFrame(matrix, index=index, columns=list(feature_set.columns))
    state: dict[str, object] = {}
    for f in table.schema:
        if not f.name.startswith("state."):
            continue
        arr = table.column(f.name)
        if f.type == pa.float64():
            state[f.name.removeprefix("state.")] = arr.to_numpy(zero_copy_only=False)
        else:
            state[f.name.removeprefix("state.")] = pd.array(
                arr.to_numpy(zero_copy_only=False), dtype="string"
            )
    frame = pd.DataFrame(state)
    frame.index = index
    return CustomerView(as_of=as_of, feature_set=feature_set, features=features, state=frame)
