"""The command line starts without its heavy libraries (issue 15).

Every `winback` start, and every `winback serve` worker (a spawned interpreter re-imports the
`winback` script before it can answer uvicorn's health check), imports `cli.main`; the command
modules import pandas, scikit-learn, MLflow and the like inside the command functions.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "numpy",
    "pandas",
    "sklearn",
    "scipy",
    "mlflow",
    "lightgbm",
    "pyarrow",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "yaml",
)


def test_importing_the_cli_imports_no_heavy_library() -> None:
    code = (
        "import json, sys; import cli.main; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []


def test_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys; sys.argv = ['winback', '--help']; from cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    for command in ("serve", "train", "score", "report", "simulate", "generate", "features"):
        assert command in out
    assert "HEAVY []" in out


def test_the_cdnow_margin_default_shown_by_the_cli_is_the_importers() -> None:
    from cli.imports import DEFAULT_MARGIN_RATE
    from features.importers import DEFAULT_MARGIN_RATE as IMPORTER_DEFAULT

    assert DEFAULT_MARGIN_RATE == IMPORTER_DEFAULT
