"""Every rule of the data contract: a bad input and the exact message the user sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features import constants as c
from features.datadir import load_data_dir, validate_data_dir, write_table
from features.errors import DataContractError, DataSourceError
from tests.factories import World, small_world

Mutation = Callable[[dict[str, pd.DataFrame]], None]


def _write(tmp_path: Path, mutate: Mutation, fmt: str = "parquet") -> Path:
    tables = small_world().build()
    mutate(tables)
    world = World()
    directory = world.write(tmp_path / "data", fmt=fmt)  # writes catalog and empty tables
    for name, df in tables.items():
        write_table(df, directory / f"{name}.{fmt}")
    return directory


def _messages(directory: Path) -> list[str]:
    report, data = validate_data_dir(directory)
    assert (data is None) == (not report.ok)
    return [p.message() for p in report.problems]


def test_small_world_is_valid_in_both_formats(tmp_path: Path) -> None:
    for fmt in ("parquet", "csv"):
        directory = small_world().write(tmp_path / fmt, fmt=fmt)
        report, data = validate_data_dir(directory)
        assert report.ok, [p.message() for p in report.problems]
        assert data is not None
        assert report.row_counts == {
            "customers": 3,
            "orders": 3,
            "contacts": 2,
            "events": 1,
            "consent": 2,
        }
        assert data.orders[c.ORDER_TS].dtype == "datetime64[ns]"
        assert data.catalog.version == "test-1"


def _set(table: str, column: str, row: int, value: object) -> Mutation:
    def mutate(tables: dict[str, pd.DataFrame]) -> None:
        df = tables[table].astype({column: object})
        df.loc[row, column] = value  # type: ignore[call-overload]  # wrong types on purpose
        tables[table] = df

    return mutate


def _both(first: Mutation, second: Mutation) -> Mutation:
    def mutate(tables: dict[str, pd.DataFrame]) -> None:
        first(tables)
        second(tables)

    return mutate


def _drop(table: str, column: str) -> Mutation:
    def mutate(tables: dict[str, pd.DataFrame]) -> None:
        tables[table] = tables[table].drop(columns=[column])

    return mutate


def _duplicate(table: str, row: int) -> Mutation:
    def mutate(tables: dict[str, pd.DataFrame]) -> None:
        df = tables[table]
        tables[table] = pd.concat([df, df.iloc[[row]]], ignore_index=True)

    return mutate


CASES: list[tuple[str, Mutation, str]] = [
    (
        "missing_column",
        _drop("orders", "revenue"),
        "orders.revenue: missing_column: required column is missing "
        "(order revenue after discounts); 3 bad row(s)",
    ),
    (
        "type_timestamp",
        _set("orders", "order_ts", 1, "last tuesday"),
        "orders.order_ts: type: expected an ISO 8601 timestamp; 1 bad row(s) (e.g. 'last tuesday')",
    ),
    (
        "type_number",
        _set("orders", "revenue", 0, "12,50"),
        "orders.revenue: type: expected a number; 1 bad row(s) (e.g. '12,50')",
    ),
    (
        "type_integer",
        _set("contacts", "stage", 0, 1.5),
        "contacts.stage: type: expected an integer; 1 bad row(s) (e.g. 1.5)",
    ),
    (
        "not_null",
        _set("orders", "revenue", 2, None),
        "orders.revenue: not_null: value required; 1 bad row(s)",
    ),
    (
        "allowed_values_event",
        _set("events", "type", 0, "purchase"),
        "events.type: allowed_values: must be one of open, click, visit, unsubscribe, complaint, "
        "support_ticket, delivery_issue, stockout; 1 bad row(s) (e.g. 'purchase')",
    ),
    (
        "allowed_values_consent",
        _set("consent", "status", 0, "maybe"),
        "consent.status: allowed_values: must be one of opted_in, opted_out; 1 bad row(s) "
        "(e.g. 'maybe')",
    ),
    (
        "allowed_values_channel",
        _set("contacts", "channel", 0, "fax"),
        "contacts.channel: allowed_values: must be one of email, sms, push, in_app, direct_mail; "
        "1 bad row(s) (e.g. 'fax')",
    ),
    (
        "range_revenue",
        _both(_set("orders", "revenue", 2, -5.0), _set("orders", "margin", 2, -8.0)),
        "orders.revenue: range: >= 0; 1 bad row(s) (e.g. -5.0)",
    ),
    (
        "range_discount",
        _set("orders", "discount_amount", 0, -1.0),
        "orders.discount_amount: range: >= 0; 1 bad row(s) (e.g. -1.0)",
    ),
    (
        "range_stage",
        _set("contacts", "stage", 0, 0),
        "contacts.stage: range: >= 1; 1 bad row(s) (e.g. 0.0)",
    ),
    (
        "range_propensity",
        _set("contacts", "propensity", 1, 1.2),
        "contacts.propensity: range: > 0 and <= 1; 1 bad row(s) (e.g. 1.2)",
    ),
    (
        "margin_above_revenue",
        _set("orders", "margin", 0, 500.0),
        "orders.margin: range: margin must not exceed revenue; 1 bad row(s) (e.g. 'o1')",
    ),
    (
        "unique",
        _duplicate("orders", 0),
        "orders.order_id: unique: key must be unique; 2 bad row(s) (e.g. 'o1')",
    ),
    (
        "foreign_key_customer",
        _set("orders", "customer_id", 0, "ghost"),
        "orders.customer_id: foreign_key: must refer to a known customer; 1 bad row(s) "
        "(e.g. 'ghost')",
    ),
    (
        "foreign_key_offer",
        _set("contacts", "offer_id", 0, "pct99"),
        "contacts.offer_id: foreign_key: must refer to a known offer of offers.yaml; 1 bad row(s) "
        "(e.g. 'pct99')",
    ),
    (
        "foreign_key_contact",
        _set("events", "contact_id", 0, "k404"),
        "events.contact_id: foreign_key: must refer to a known contact; 1 bad row(s) (e.g. 'k404')",
    ),
    (
        "control_channel",
        _set("contacts", "channel", 1, "email"),
        "contacts.channel: control_channel: channel must be empty exactly when offer_id is "
        "'holdout'; 1 bad row(s) (e.g. 'k2')",
    ),
    (
        "timestamp_order_orders",
        _set("orders", "order_ts", 0, pd.Timestamp("2022-12-31")),
        "orders.order_ts: timestamp_order: order placed before the customer's signup_ts; "
        "1 bad row(s) (e.g. 'o1')",
    ),
    (
        "timestamp_order_contacts",
        _set("contacts", "ts", 0, pd.Timestamp("2022-06-01")),
        "contacts.ts: timestamp_order: contact before the customer's signup_ts; 1 bad row(s) "
        "(e.g. 'k1')",
    ),
    (
        "timestamp_order_events",
        _set("events", "ts", 0, pd.Timestamp("2023-08-31")),
        "events.ts: timestamp_order: event before the contact it refers to; 1 bad row(s) "
        "(e.g. 'e1')",
    ),
]


@pytest.mark.parametrize(("rule", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule_reports_exact_message(
    tmp_path: Path, rule: str, mutate: Mutation, expected: str
) -> None:
    # text in a numeric or timestamp column can only arrive through CSV
    fmt = "csv" if rule.startswith("type_") and rule != "type_integer" else "parquet"
    directory = _write(tmp_path, mutate, fmt=fmt)
    assert _messages(directory) == [expected]


def test_csv_reports_raw_text_of_bad_values(tmp_path: Path) -> None:
    directory = _write(tmp_path, _set("orders", "revenue", 0, "ten"), fmt="csv")
    assert _messages(directory) == [
        "orders.revenue: type: expected a number; 1 bad row(s) (e.g. 'ten')"
    ]


def test_examples_are_capped_at_five(tmp_path: Path) -> None:
    def many_ghosts(tables: dict[str, pd.DataFrame]) -> None:
        rows = [tables["orders"].iloc[0].copy() for _ in range(8)]
        extra = pd.DataFrame(rows).reset_index(drop=True)
        extra["order_id"] = [f"x{i}" for i in range(8)]
        extra["customer_id"] = [f"ghost{i}" for i in range(8)]
        tables["orders"] = pd.concat([tables["orders"], extra], ignore_index=True)

    report, _ = validate_data_dir(_write(tmp_path, many_ghosts))
    (problem,) = report.problems
    assert problem.n_bad == 8
    assert len(problem.examples) == 5


def test_missing_required_table(tmp_path: Path) -> None:
    directory = small_world().write(tmp_path / "d")
    (directory / "orders.parquet").unlink()
    assert _messages(directory) == [
        "orders: missing_table: orders.parquet or orders.csv needed; 0 bad row(s)"
    ]


def test_optional_tables_may_be_absent(tmp_path: Path) -> None:
    directory = small_world().write(tmp_path / "d")
    for name in ("contacts", "events", "consent"):
        (directory / f"{name}.parquet").unlink()
    data = load_data_dir(directory)
    assert len(data.contacts) == 0 and len(data.orders) == 3


def test_table_in_two_formats_is_refused(tmp_path: Path) -> None:
    directory = small_world().write(tmp_path / "d")
    small_world().write(tmp_path / "d", fmt="csv")
    with pytest.raises(DataSourceError, match="table 'customers' exists as both"):
        validate_data_dir(directory)


def test_unreadable_parquet_is_a_clear_error(tmp_path: Path) -> None:
    directory = small_world().write(tmp_path / "d")
    (directory / "orders.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataSourceError, match=r"orders\.parquet: cannot read table"):
        validate_data_dir(directory)


def test_bad_catalog_names_key_and_problem(tmp_path: Path) -> None:
    directory = small_world().write(tmp_path / "d")
    text = (directory / "offers.yaml").read_text()
    (directory / "offers.yaml").write_text(
        text.replace("revenue_fraction: 0.1", "revenue_fraction: 2")
    )
    messages = _messages(directory)
    assert messages == [
        f"offers.yaml: offer_catalog: {directory / 'offers.yaml'}: offers[0].cost.revenue_fraction:"
        " Input should be less than or equal to 1; 1 bad row(s)"
    ]


def test_load_raises_contract_error_with_report(tmp_path: Path) -> None:
    directory = _write(tmp_path, _set("orders", "revenue", 0, -5.0))
    with pytest.raises(DataContractError) as info:
        load_data_dir(directory)
    assert info.value.code == "data_contract"
    assert [(p.column, p.rule) for p in info.value.report.problems] == [
        ("revenue", "range"),
        ("margin", "range"),  # a margin of 30 on a revenue of -5 breaks both rules
    ]


def test_cli_validate_reports_and_exits_1(tmp_path: Path) -> None:
    directory = _write(tmp_path, _set("events", "type", 0, "purchase"))
    result = CliRunner().invoke(app, ["validate", str(directory)])
    assert result.exit_code == 1
    assert "allowed_values" in result.output and "'purchase'" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_ok_exits_0(tmp_path: Path) -> None:
    directory = small_world().write(tmp_path / "d")
    result = CliRunner().invoke(app, ["validate", str(directory)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_cli_validate_missing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "not a directory" in result.output
    assert "Traceback" not in result.output


def test_header_only_customers_reports_foreign_keys_not_traceback(tmp_path: Path) -> None:
    directory = _write(tmp_path, lambda t: t.update({c.CUSTOMERS: t[c.CUSTOMERS].iloc[0:0]}), "csv")
    report, data = validate_data_dir(directory)
    assert data is None
    assert {(p.table, p.rule) for p in report.problems} >= {(c.ORDERS, "foreign_key")}
    result = CliRunner().invoke(app, ["validate", str(directory)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_unsorted_unique_ids_are_valid_and_repeats_anywhere_are_found(tmp_path: Path) -> None:
    def reverse(tables: dict[str, pd.DataFrame]) -> None:
        tables[c.ORDERS] = tables[c.ORDERS].iloc[::-1].reset_index(drop=True)

    assert _messages(_write(tmp_path / "a", reverse)) == []
    assert _messages(_write(tmp_path / "b", _both(reverse, _duplicate(c.ORDERS, 2)))) == [
        "orders.order_id: unique: key must be unique; 2 bad row(s) (e.g. 'o1')"
    ]


def test_repeated_customer_is_checked_against_its_first_signup(tmp_path: Path) -> None:
    def repeat_c2_later(tables: dict[str, pd.DataFrame]) -> None:
        extra = tables[c.CUSTOMERS].iloc[[1]].copy()
        extra[c.SIGNUP_TS] = pd.Timestamp("2023-12-01")  # after c2's order and contact
        tables[c.CUSTOMERS] = pd.concat([tables[c.CUSTOMERS], extra], ignore_index=True)

    assert _messages(_write(tmp_path, repeat_c2_later)) == [
        "customers.customer_id: unique: key must be unique; 2 bad row(s) (e.g. 'c2')"
    ]


def test_event_without_contact_is_neither_a_foreign_key_nor_time_problem(tmp_path: Path) -> None:
    early = _set(c.EVENTS, c.TS, 0, pd.Timestamp("2020-01-01"))
    assert _messages(_write(tmp_path, _both(early, _set(c.EVENTS, c.CONTACT_ID, 0, None)))) == []
