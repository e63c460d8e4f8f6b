"""Importers of the real datasets: CDNOW -> data directory, Hillstrom -> modeling frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features import constants as c
from features.datadir import load_data_dir, validate_data_dir
from features.errors import DataSourceError
from features.importers import import_cdnow, import_hillstrom, read_cdnow, read_hillstrom
from features.importers.hillstrom import FEATURE_SET, FRAME_FILE
from features.modeling_frame import CONVERTED, OUTCOME_MARGIN, OUTCOME_REVENUE, read_frame
from features.offers import load_catalog

CDNOW_HEADER = " customer_id  date number_of_cds  dollar_value\r\n"
HILLSTROM_HEADER = (
    "recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,"
    "visit,conversion,spend\r\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


# --- CDNOW parsing on tiny files ------------------------------------------------------------


def test_cdnow_parses_crlf_leading_spaces_with_and_without_header(tmp_path: Path) -> None:
    body = " 00002 19970112  1   12.00\r\n 00001 19970101  2   11.77\r\n\r\n 00002 19970301 5 77.00"
    with_header = read_cdnow(_write(tmp_path / "a.txt", CDNOW_HEADER + body))
    without = read_cdnow(_write(tmp_path / "b.txt", body.replace("\r\n", "\n")))
    pd.testing.assert_frame_equal(with_header, without)
    assert with_header["customer_id"].tolist() == ["00002", "00001", "00002"]
    assert with_header["date"].tolist() == [
        pd.Timestamp("1997-01-12"),
        pd.Timestamp("1997-01-01"),
        pd.Timestamp("1997-03-01"),
    ]
    assert with_header["number_of_cds"].tolist() == [1, 2, 5]
    assert with_header["dollar_value"].tolist() == [12.0, 11.77, 77.0]


def test_cdnow_import_maps_to_contract(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "cdnow.txt",
        CDNOW_HEADER + " 00002 19970112  1   12.00\r\n 00001 19970101  2   11.77\r\n"
        " 00002 19970301  5   77.00\r\n",
    )
    result = import_cdnow(src, tmp_path / "out", margin_rate=0.4)
    data = load_data_dir(tmp_path / "out")
    orders = data.orders.set_index(c.ORDER_ID)
    assert orders.index.tolist() == ["cdnow-1", "cdnow-2", "cdnow-3"]
    assert orders[c.MARGIN].tolist() == [4.8, 4.71, 30.8]
    assert (orders[c.CATEGORY] == "music").all()
    assert (orders[c.DISCOUNT_AMOUNT] == 0).all()
    assert orders["number_of_cds"].tolist() == [1, 2, 5]
    signup = data.customers.set_index(c.CUSTOMER_ID)[c.SIGNUP_TS]
    assert signup.to_dict() == {
        "00001": pd.Timestamp("1997-01-01"),
        "00002": pd.Timestamp("1997-01-12"),
    }
    assert len(data.contacts) == len(data.events) == len(data.consent) == 0
    assert {o.type for o in data.catalog.offers} == {"percent_discount", "content"}
    assert (result.customers, result.orders, result.revenue) == (2, 3, 100.77)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            " 00001 19970101  1\r\n",
            "line 3: expected 4 whitespace-separated fields "
            "(customer_id date number_of_cds dollar_value), found 3",
        ),
        (
            " 00001 1997-01-01  1  2.00\r\n",
            "line 3: date is not a YYYYMMDD date (value '1997-01-01'); 1 such row(s)",
        ),
        (
            " 00001 19970230  1  2.00\r\n",
            "line 3: date is not a YYYYMMDD date (value '19970230'); 1 such row(s)",
        ),
        (
            " 00001 19970101  x  2.00\r\n",
            "line 3: number_of_cds is not a whole number >= 0 (value 'x'); 1 such row(s)",
        ),
        (
            " 00001 19970101  1  -2.00\r\n",
            "line 3: dollar_value is not an amount >= 0 (value '-2.00'); 1 such row(s)",
        ),
    ],
)
def test_cdnow_malformed_row_gives_exact_message(tmp_path: Path, body: str, problem: str) -> None:
    src = _write(tmp_path / "bad.txt", CDNOW_HEADER + " 00001 19970101  1   11.77\r\n" + body)
    with pytest.raises(DataSourceError) as err:
        read_cdnow(src)
    assert str(err.value) == f"{src}: {problem}"


def test_cdnow_missing_empty_and_wrong_files(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="CDNOW file not found"):
        read_cdnow(tmp_path / "absent.txt")
    with pytest.raises(DataSourceError, match="no data rows"):
        read_cdnow(_write(tmp_path / "empty.txt", CDNOW_HEADER))
    with pytest.raises(DataSourceError, match=r"line 1: header has 1 field\(s\), expected 4"):
        read_cdnow(_write(tmp_path / "h.csv", HILLSTROM_HEADER + "1,a,2,0,0,Urban,0,Web,x,0,0,0"))
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(DataSourceError, match="not a text file"):
        read_cdnow(tmp_path / "binary.txt")


def test_import_refuses_non_empty_out_unless_overwrite(tmp_path: Path) -> None:
    src = _write(tmp_path / "cdnow.txt", " 00001 19970101  1   11.77\n")
    out = tmp_path / "out"
    import_cdnow(src, out, fmt="csv")
    with pytest.raises(DataSourceError, match="not empty; choose another or pass --overwrite"):
        import_cdnow(src, out)
    import_cdnow(src, out, overwrite=True)  # parquet replaces csv: no "exists as both" error
    report, _ = validate_data_dir(out)
    assert report.ok
    assert not (out / "orders.csv").exists()


# --- Hillstrom parsing on tiny files --------------------------------------------------------


def test_hillstrom_parses_quoted_commas_and_maps_arms(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "h.csv",
        HILLSTROM_HEADER
        + '10,"6) $750 - $1,000",800.5,1,0,Surburban,0,Phone,Womens E-Mail,1,1,29.99\r\n'
        + "6,1) $0 - $100,29.99,1,1,Rural,1,Web,No E-Mail,0,0,0\r\n"
        + "2,1) $0 - $100,50.00,0,1,Urban,0,Multichannel,Mens E-Mail,1,0,0",
    )
    raw = read_hillstrom(src)
    assert raw["history_segment"].tolist()[0] == "6) $750 - $1,000"
    result = import_hillstrom(src, tmp_path / "out")
    frame, spec = read_frame(result.frame_path)
    assert frame[c.CUSTOMER_ID].tolist() == ["h00001", "h00002", "h00003"]
    assert frame[c.OFFER_ID].tolist() == ["womens_email", "holdout", "mens_email"]
    assert frame[CONVERTED].tolist() == [1, 0, 0]
    assert frame[OUTCOME_REVENUE].tolist() == [29.99, 0.0, 0.0]
    assert frame[OUTCOME_MARGIN].isna().all()
    assert np.allclose(frame[c.PROPENSITY], 1 / 3)
    assert (frame[c.TS] == pd.Timestamp("2008-03-01")).all()
    assert frame["purchase_channel"].tolist() == ["Phone", "Web", "Multichannel"]
    assert frame["zip_code"].cat.categories.tolist() == ["Rural", "Surburban", "Urban"]
    assert spec.kind == "offer_response" and spec.feature_set == FEATURE_SET
    assert set(spec.categorical_columns) <= set(spec.feature_columns)
    assert "history_segment" not in spec.feature_columns  # a binning of `history`
    assert set(spec.outcome_columns) == {CONVERTED, OUTCOME_REVENUE, OUTCOME_MARGIN, "visit"}
    offers = load_catalog(tmp_path / "out" / c.OFFERS_FILE).offers
    assert [(o.offer_id, o.type, o.channels) for o in offers] == [
        ("mens_email", "content", ("email",)),
        ("womens_email", "content", ("email",)),
    ]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            "x,1) $0 - $100,29.99,1,1,Rural,1,Web,No E-Mail,0,0,0",
            "line 3: column 'recency' is not a number (value 'x'); 1 such row(s)",
        ),
        (
            "6,1) $0 - $100,29.99,1,1,Rural,1,Web,Text Message,0,0,0",
            "line 3: column 'segment' is not one of Mens E-Mail, Womens E-Mail, No E-Mail "
            "(value 'Text Message'); 1 such row(s)",
        ),
        (
            "6,1) $0 - $100,29.99,2,1,Rural,1,Web,No E-Mail,0,0,0",
            "line 3: column 'mens' must be 0 or 1 (value '2'); 1 such row(s)",
        ),
        (
            "6,1) $0 - $100,29.99,1,1,,1,Web,No E-Mail,0,0,0",
            "line 3: column 'zip_code' is empty (value ''); 1 such row(s)",
        ),
    ],
)
def test_hillstrom_malformed_row_gives_exact_message(
    tmp_path: Path, row: str, problem: str
) -> None:
    good = "10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0\r\n"
    src = _write(tmp_path / "h.csv", HILLSTROM_HEADER + good + row)
    with pytest.raises(DataSourceError) as err:
        read_hillstrom(src)
    assert str(err.value) == f"{src}: {problem}"


def test_hillstrom_wrong_file_names_missing_columns(tmp_path: Path) -> None:
    src = _write(tmp_path / "cdnow.txt", CDNOW_HEADER + " 00001 19970101  1   11.77\r\n")
    with pytest.raises(DataSourceError) as err:
        read_hillstrom(src)
    assert str(err.value).startswith(f"{src}: missing column(s) recency, history_segment,")
    with pytest.raises(DataSourceError, match="Hillstrom CSV file not found"):
        read_hillstrom(tmp_path / "absent.csv")


def test_cli_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", "cdnow", str(tmp_path / "x.txt"), "--out", "o"])
    assert result.exit_code == 1
    assert "CDNOW file not found" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, DataSourceError)


# --- the real files ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_cdnow_import(shared_data: Path, tmp_path: Path) -> None:
    result = import_cdnow(shared_data / "cdnow" / "CDNOW_master.txt", tmp_path / "cdnow")
    assert result.report.ok, result.report.problems
    data = load_data_dir(tmp_path / "cdnow")
    assert len(data.customers) == 23_570
    assert len(data.orders) == 69_659
    assert round(float(data.orders[c.REVENUE].sum()), 2) == 2_500_315.63
    assert data.orders[c.ORDER_ID].is_unique
    assert data.customers[c.CUSTOMER_ID].min() == "00001"
    assert data.customers[c.SIGNUP_TS].max() == pd.Timestamp("1997-03-25")
    assert np.allclose(data.orders[c.MARGIN], data.orders[c.REVENUE] * 0.25, atol=0.005)


@pytest.mark.slow
def test_real_hillstrom_import(shared_data: Path, tmp_path: Path) -> None:
    result = import_hillstrom(shared_data / "hillstrom" / "hillstrom.csv", tmp_path / "h")
    frame, _ = read_frame(tmp_path / "h" / FRAME_FILE)
    assert len(frame) == 64_000
    assert frame[c.CUSTOMER_ID].is_unique
    by_arm = frame.groupby(c.OFFER_ID)
    conversion = (by_arm[CONVERTED].mean() * 100).round(3).to_dict()
    assert conversion == {"mens_email": 1.253, "womens_email": 0.884, "holdout": 0.573}
    spend = by_arm[OUTCOME_REVENUE].mean().round(3).to_dict()
    assert spend == {"mens_email": 1.423, "womens_email": 1.077, "holdout": 0.653}
    assert by_arm.size().to_dict() == {
        "mens_email": 21_307,
        "womens_email": 21_387,
        "holdout": 21_306,
    }
    assert result.arms["customers"].sum() == 64_000
    # history_segment is a fixed binning of history, which is why it is not a feature
    cuts = [0, 100, 200, 350, 500, 750, 1000, np.inf]
    bucket = pd.cut(frame["history"], cuts, right=False, labels=False) + 1
    assert (frame["history_segment"].str[0].astype(int) == bucket).all()


@pytest.mark.slow
def test_real_files_through_cli(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cd = runner.invoke(
        app,
        [
            "import",
            "cdnow",
            str(shared_data / "cdnow" / "CDNOW_master.txt"),
            "--out",
            str(tmp_path / "cdnow"),
            "--margin-rate",
            "0.3",
        ],
    )
    assert cd.exit_code == 0, cd.output
    assert "23,570 customers, 69,659 orders" in cd.output
    assert "0.3 x revenue" in cd.output
    assert runner.invoke(app, ["validate", str(tmp_path / "cdnow")]).exit_code == 0
    hs = runner.invoke(
        app,
        [
            "import",
            "hillstrom",
            str(shared_data / "hillstrom" / "hillstrom.csv"),
            "--out",
            str(tmp_path / "h"),
        ],
    )
    assert hs.exit_code == 0, hs.output
    assert "1.253%" in hs.output
    assert (tmp_path / "h" / FRAME_FILE).is_file()
    assert (tmp_path / "h" / c.OFFERS_FILE).is_file()


def test_cdnow_import_writes_partitions_when_asked(tmp_path: Path) -> None:
    from features.partition_layout import is_partitioned, read_layout

    body = "".join(f" {i:05d} 1997010{1 + i % 9}  1   {10 + i}.50\r\n" for i in range(1, 40))
    src = _write(tmp_path / "cdnow.txt", CDNOW_HEADER + body)
    flat = import_cdnow(src, tmp_path / "flat")
    part = import_cdnow(src, tmp_path / "part", partitions=4)
    assert part.report.ok and is_partitioned(tmp_path / "part")
    assert read_layout(tmp_path / "part").row_counts[c.ORDERS] == flat.orders == 39
    a, b = load_data_dir(tmp_path / "flat"), load_data_dir(tmp_path / "part")
    key = [c.ORDER_ID]
    pd.testing.assert_frame_equal(
        a.orders.sort_values(key).reset_index(drop=True),
        b.orders.sort_values(key).reset_index(drop=True),
    )
    # overwriting with an unpartitioned import removes the partitions
    import_cdnow(src, tmp_path / "part", overwrite=True)
    assert not is_partitioned(tmp_path / "part") and not (tmp_path / "part" / c.ORDERS).is_dir()
    with pytest.raises(DataSourceError, match="Parquet"):
        import_cdnow(src, tmp_path / "csv", fmt="csv", partitions=2)
    res = CliRunner().invoke(
        app, ["import", "cdnow", str(src), "--out", str(tmp_path / "cli"), "--partitions", "3"]
    )
    assert res.exit_code == 0, res.output
    assert read_layout(tmp_path / "cli").n_partitions == 3
