"""`winback import transactions`: a retailer's own transaction log -> a valid data directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import constants as c
from features.datadir import load_data_dir
from features.errors import DataContractError, DataSourceError
from features.importers import transactions as tx
from features.importers.transactions import TransactionMapping, import_transactions
from features.partitions import partition_of

INVOICE_MAP = {
    "customer_id": "CustomerID",
    "ts": "InvoiceDate",
    "order_id": "InvoiceNo",
    "quantity": "Quantity",
    "unit_price": "UnitPrice",
    "category": "Category",
    "region": "Country",
}

LINES = pd.DataFrame(
    {
        "InvoiceNo": ["A1", "A1", "A1", "C9", "A2", "A3", "A4", "A5"],
        "Quantity": ["2", "1", "-1", "-3", "5", "1", "1", "1"],
        "UnitPrice": ["10", "30", "10", "4", "2", "7", "x", "3"],
        "InvoiceDate": [
            "2024-01-05 10:00",
            "2024-01-05 10:00",
            "2024-01-06 09:00",
            "2024-01-07 09:00",
            "2024-02-01 12:00",
            "2024-02-02 12:00",
            "2024-02-03 12:00",
            "not a date",
        ],
        "CustomerID": ["k1", "k1", "k1", "k1", "k2", "", "k2", "k2"],
        "Category": ["toys", "books", "toys", "toys", "garden", "toys", "toys", "toys"],
        "Country": ["FR", "FR", "FR", "FR", "DE", "DE", "DE", "DE"],
    }
)


def _csv(tmp_path: Path, sep: str = ",", df: pd.DataFrame = LINES) -> Path:
    path = tmp_path / "lines.csv"
    df.to_csv(path, sep=sep, index=False)
    return path


def _import(src: Path | str, out: Path, **kw: object) -> tx.TransactionImport:
    partitions = kw.pop("partitions", None)
    mapping = TransactionMapping(
        columns=dict(kw.pop("columns", INVOICE_MAP)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return import_transactions(src, out, mapping, partitions=partitions)  # type: ignore[arg-type]


def test_lines_become_orders_and_every_dropped_row_is_counted(tmp_path: Path) -> None:
    r = _import(_csv(tmp_path), tmp_path / "d", cancel_prefix="C")
    assert r.rows_read == 8
    assert r.dropped == {"missing_customer_id": 1, "bad_timestamp": 1, "bad_amount": 1}
    # the negative line of A1 and the whole cancellation invoice C9
    assert r.return_lines == 2
    assert r.return_value == pytest.approx(10 + 12)
    data = load_data_dir(tmp_path / "d")
    orders = data.orders.set_index(c.ORDER_ID)
    assert sorted(orders.index) == ["A1", "A2"]
    assert orders.loc["A1", c.REVENUE] == pytest.approx(50.0)  # 2 x 10 + 1 x 30
    assert orders.loc["A1", c.CATEGORY] == "books"  # the largest line's
    assert orders.loc["A1", c.ORDER_TS] == pd.Timestamp("2024-01-05 10:00")
    customers = data.customers.set_index(c.CUSTOMER_ID)
    assert customers.loc["k1", c.REGION] == "FR"
    assert customers.loc["k2", c.SIGNUP_TS] == pd.Timestamp("2024-02-01 12:00")
    assert (r.customers, r.orders) == (2, 2)


def test_missing_margin_is_assumed_flagged_and_recorded(tmp_path: Path) -> None:
    r = _import(_csv(tmp_path), tmp_path / "d", margin_rate=0.4)
    assert r.margin_rate == 0.4
    data = load_data_dir(tmp_path / "d")
    assert data.assumed_margin_rate == 0.4
    assert data.orders_margin_assumed == len(data.orders)
    np.testing.assert_allclose(data.orders[c.MARGIN], 0.4 * data.orders[c.REVENUE])


def test_a_mapped_margin_is_not_assumed(tmp_path: Path) -> None:
    df = LINES.assign(Margin=["3", "9", "3", "1", "2", "1", "1", "1"])
    r = _import(_csv(tmp_path, df=df), tmp_path / "d", columns={**INVOICE_MAP, "margin": "Margin"})
    assert r.margin_rate is None
    data = load_data_dir(tmp_path / "d")
    assert data.assumed_margin_rate is None and data.orders_margin_assumed == 0
    assert data.orders.set_index(c.ORDER_ID).loc["A1", c.MARGIN] == pytest.approx(12.0)


def test_without_order_id_or_category_every_row_is_an_order(tmp_path: Path) -> None:
    cols = {"customer_id": "CustomerID", "ts": "InvoiceDate", "revenue": "UnitPrice"}
    r = _import(_csv(tmp_path), tmp_path / "d", columns=cols)
    assert r.orders == 5  # 8 rows - no id - bad date - bad amount
    data = load_data_dir(tmp_path / "d")
    assert set(data.orders[c.CATEGORY]) == {c.UNKNOWN_CATEGORY}
    assert data.orders[c.ORDER_ID].is_unique


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_any_separator(tmp_path: Path, sep: str) -> None:
    r = _import(_csv(tmp_path, sep), tmp_path / "d", sep=sep)
    assert (r.customers, r.orders) == (2, 2)


def test_a_wrong_separator_names_the_columns_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"not in the source.*--sep"):
        _import(_csv(tmp_path, ";"), tmp_path / "d")


def test_parquet_source(tmp_path: Path) -> None:
    src = tmp_path / "lines.parquet"
    typed = LINES.assign(  # typed columns, as a warehouse export has them
        Quantity=LINES["Quantity"].astype(int),
        UnitPrice=pd.to_numeric(LINES["UnitPrice"], errors="coerce"),
        InvoiceDate=pd.to_datetime(LINES["InvoiceDate"], errors="coerce"),
        CustomerID=LINES["CustomerID"].replace("", None),
    )
    typed.to_parquet(src)
    r = _import(src, tmp_path / "d")  # without cancel_prefix C9 is still a return, by sign
    assert r.dropped == {"missing_customer_id": 1, "bad_timestamp": 1, "bad_amount": 1}
    assert (r.customers, r.orders, r.return_lines) == (2, 2, 2)


def test_orders_spanning_chunks_are_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _import(_csv(tmp_path), tmp_path / "a")
    monkeypatch.setattr(tx, "CHUNK_ROWS", 2)
    chunked = _import(_csv(tmp_path), tmp_path / "b")
    a = load_data_dir(tmp_path / "a").orders
    b = load_data_dir(tmp_path / "b").orders
    pd.testing.assert_frame_equal(a, b)
    assert whole.dropped == chunked.dropped and whole.return_lines == chunked.return_lines


def test_one_order_id_for_two_customers_is_refused(tmp_path: Path) -> None:
    df = LINES.assign(InvoiceNo="SAME")
    with pytest.raises(DataSourceError, match="more than one customer"):
        _import(_csv(tmp_path, df=df), tmp_path / "d")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"ts": "InvoiceDate", "revenue": "x"}, "'customer_id' is required"),
        ({"customer_id": "a", "ts": "b", "quantity": "q"}, "map 'revenue'"),
        ({"customer_id": "a", "ts": "b", "revenue": "r", "price": "p"}, "unknown field"),
    ],
)
def test_bad_mappings_say_what_is_wrong(columns: dict[str, str], message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        TransactionMapping(columns=columns)


def test_sql_query_on_postgresql(tmp_path: Path, database_url: str) -> None:
    import sqlalchemy as sa

    table = f"tx_import_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(database_url)
    try:
        LINES.to_sql(table, engine, index=False)
        query = f"SELECT * FROM {table} WHERE \"CustomerID\" <> ''"
        mapping = TransactionMapping(columns=INVOICE_MAP, cancel_prefix="C")
        r = import_transactions(database_url, tmp_path / "d", mapping, query=query)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
    assert r.rows_read == 7 and (r.customers, r.orders) == (2, 2)
    assert load_data_dir(tmp_path / "d").meta["query"] == query


def test_dataset_json_never_holds_a_password() -> None:
    assert tx._redacted("postgresql+psycopg://u:s3cret@db:5432/shop") == (
        "postgresql+psycopg://u:***@db:5432/shop"
    )


def test_cli_prints_what_it_did(tmp_path: Path) -> None:
    from cli.main import app

    src = _csv(tmp_path, ";")
    args = ["import", "transactions", str(src), "--out", str(tmp_path / "d"), "--sep", ";"]
    for field, column in INVOICE_MAP.items():
        args += ["--map", f"{field}={column}"]
    result = CliRunner().invoke(app, [*args, "--cancel-prefix", "C"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "read 8 rows" in out
    assert "dropped 1 rows: no customer id" in out
    assert "dropped 2 return/cancellation lines" in out
    assert "2 customers, 2 orders" in out
    assert "margin: assumed 0.25" in out
    bad = CliRunner().invoke(app, [*args[:5], "--map", "ts"])
    assert bad.exit_code != 0 and "FIELD=COLUMN" in bad.output


def _many_lines(n_customers: int = 300, seed: int = 3) -> pd.DataFrame:
    """Invoice lines of many customers: orders of several lines, returns, a bad row or two."""
    rng = np.random.default_rng(seed)
    rows = []
    for order in range(n_customers * 4):
        cust = f"k{rng.integers(n_customers):04d}"
        day = pd.Timestamp("2023-01-01") + pd.Timedelta(int(rng.integers(0, 600)), "D")
        for _ in range(int(rng.integers(1, 4))):
            qty = int(rng.integers(-1, 5))
            rows.append(
                {
                    "InvoiceNo": f"N{order:05d}",
                    "Quantity": str(qty),
                    "UnitPrice": f"{rng.uniform(1, 40):.2f}",
                    "InvoiceDate": day.strftime("%Y-%m-%d %H:%M"),
                    "CustomerID": cust,
                    "Category": str(rng.choice(["toys", "books", "garden"])),
                    "Country": str(rng.choice(["FR", "DE"])),
                }
            )
    df = pd.DataFrame(rows)
    df.loc[5, "CustomerID"] = ""
    df.loc[9, "InvoiceDate"] = "not a date"
    return df


def test_partitioned_import_streams_and_equals_the_in_memory_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--partitions`: chunks set aside by partition, each partition finished on its own; the
    same customers and orders (orders spanning chunks merged) and the same summary."""
    src = _csv(tmp_path, df=_many_lines())
    monkeypatch.setattr(tx, "CHUNK_ROWS", 700)  # orders span chunks
    flat = _import(src, tmp_path / "flat")

    def whole_source(*args: object, **kw: object) -> None:
        raise AssertionError("the partitioned import read the whole source into memory")

    monkeypatch.setattr(tx, "transaction_tables", whole_source)
    part = _import(src, tmp_path / "part", partitions=4)
    assert (tmp_path / "part" / "partitions.json").is_file()
    assert not list((tmp_path / "part").glob(".import-*"))  # the scratch folder is gone
    a, b = load_data_dir(tmp_path / "flat"), load_data_dir(tmp_path / "part")
    for name in ("orders", "customers"):
        key = c.ORDER_ID if name == "orders" else c.CUSTOMER_ID
        x = getattr(a, name).sort_values(key).reset_index(drop=True)
        y = getattr(b, name).sort_values(key).reset_index(drop=True)
        assert len(x) > 100
        pd.testing.assert_frame_equal(x, y, check_like=True)
    for field in ("rows_read", "dropped", "return_lines", "customers", "orders", "revenue"):
        assert getattr(flat, field) == getattr(part, field), field
    assert (flat.first_order, flat.last_order) == (part.first_order, part.last_order)


def test_partitioned_import_refuses_an_order_id_of_customers_in_two_partitions(
    tmp_path: Path,
) -> None:
    lines = _many_lines(40)
    owners = lines[lines["CustomerID"] != ""].groupby("CustomerID")["InvoiceNo"].first()
    where = dict(zip(owners.index, partition_of(owners.index.to_series(), 8), strict=True))
    a = owners.index[0]
    b = next(x for x in owners.index if where[x] != where[a])  # another partition
    lines.loc[lines["CustomerID"] == b, "InvoiceNo"] = owners[a]  # b's orders take a's id
    with pytest.raises(DataContractError, match=r"order_id") as err:
        _import(_csv(tmp_path, df=lines), tmp_path / "p", partitions=8)
    assert [(p.table, p.rule) for p in err.value.report.problems] == [("orders", "unique")]
