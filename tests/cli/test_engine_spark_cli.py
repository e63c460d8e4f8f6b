"""`--engine spark` and `--sample-customers` refuse what they cannot use, before any work."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from features.synthetic.generate import generate_world, write_world


def test_spark_engine_refuses_an_unpartitioned_directory(tmp_path: Path) -> None:
    write_world(generate_world(50, 1), tmp_path / "flat")
    runner = CliRunner()
    for args in (
        ["features", "materialize", str(tmp_path / "flat"), "--out", str(tmp_path / "s")],
        ["features", "frames", str(tmp_path / "flat"), "--out", str(tmp_path / "f")],
    ):
        result = runner.invoke(app, [*args, "--engine", "spark"])
        assert result.exit_code != 0
        assert "not a partitioned data directory" in result.output
        assert "winback partition" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists() and not (tmp_path / "f").exists()


def test_sample_customers_needs_a_data_directory(tmp_path: Path) -> None:
    frame = tmp_path / "frames"
    frame.mkdir()
    result = CliRunner().invoke(app, ["train", str(frame), "--sample-customers", "10"])
    assert result.exit_code != 0
    assert "--sample-customers needs a data directory" in result.output
