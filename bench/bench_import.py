"""Wall time and peak memory of `winback import transactions` on a 5,000,000-line invoice log.

The file is generated here (under /tmp, never committed): an invoice-line export like the one
issue 17 describes (invoice number, stock code, quantity, invoice date, unit price, customer
id, country), with 2% of lines without a customer id and 2% cancellation lines (invoice `C...`,
negative quantity). About 5 lines per invoice, 200,000 customers over two years.

Bar: under a minute and under 4 GB. The baseline in the same run is reading the same file with
a plain `pandas.read_csv` of the mapped columns (no parsing, no reduction), in a child process.

Run: .venv/bin/python bench/bench_import.py [--lines 5000000] [--partitions 8] [--keep]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

MAPPING = (
    "customer_id=CustomerID",
    "ts=InvoiceDate",
    "order_id=InvoiceNo",
    "quantity=Quantity",
    "unit_price=UnitPrice",
    "category=StockCode",
    "region=Country",
)


def write_invoice_log(path: Path, n_lines: int, seed: int = 0) -> None:
    """An invoice-line CSV of `n_lines` lines, written in blocks (memory stays small)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-01").value // 10**9
    block = 1_000_000
    invoice = 0
    with path.open("w", encoding="utf-8") as fh:
        fh.write("InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n")
        for lo in range(0, n_lines, block):
            n = min(block, n_lines - lo)
            per = rng.integers(1, 10, n // 4 + 2)  # 5 lines on average: enough for n
            inv = np.repeat(np.arange(invoice, invoice + len(per)), per)[:n]
            invoice = int(inv[-1]) + 1
            cust = rng.integers(10000, 210000, invoice + 1)[inv]
            secs = start + np.sort(rng.integers(0, 2 * 365 * 86400, invoice + 1))[inv]
            qty = rng.integers(1, 13, n)
            cancel = rng.random(invoice + 1)[inv] < 0.02
            qty = np.where(cancel, -qty, qty)
            df = pd.DataFrame(
                {
                    "InvoiceNo": np.where(cancel, "C", "") + inv.astype(str),
                    "StockCode": rng.choice(["toys", "books", "garden", "home"], n),
                    "Quantity": qty,
                    "InvoiceDate": pd.to_datetime(secs, unit="s").strftime("%Y-%m-%d %H:%M"),
                    "UnitPrice": np.round(rng.gamma(2.0, 2.5, n), 2),
                    "CustomerID": np.where(rng.random(n) < 0.02, "", cust.astype(str)),
                    "Country": rng.choice(["United Kingdom", "France", "Germany"], n),
                }
            )
            df.to_csv(fh, header=False, index=False)


PEAK_PRINTER = """
import resource, sys
try:
    {code}
finally:
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _child(code: str) -> tuple[float, float, str]:
    """Run `code` in a fresh interpreter; its wall time, its own peak RSS (GiB), its output."""
    t0 = time.perf_counter()
    script = PEAK_PRINTER.format(code=code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PEAK_KIB"))
    return wall, int(line.split()[1]) / 1024**2, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated file and output")
    ap.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="also import into this many customer partitions (streamed: one chunk, then one "
        "partition in memory) and print its time and peak beside the one-file import",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_import_"))
    src = tmp / "invoices.csv"
    t0 = time.perf_counter()
    write_invoice_log(src, args.lines)
    print(
        f"generated {args.lines:,} lines ({src.stat().st_size / 1e6:,.0f} MB) in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    cols = [m.split("=")[1] for m in MAPPING]
    base_wall, base_peak, _ = _child(
        f"import pandas as pd; pd.read_csv({str(src)!r}, usecols={cols!r}, dtype=str)"
    )
    argv = ["import", "transactions", str(src), "--out", str(tmp / "out"), "--cancel-prefix", "C"]
    for m in MAPPING:
        argv += ["--map", m]
    code = f"sys.argv = ['winback', *{argv!r}]; from cli.main import main; main()"
    wall, peak, out = _child(code)
    print(out.strip())
    print(f"baseline pandas.read_csv of the mapped columns: {base_wall:.1f}s, {base_peak:.2f} GiB")
    print(
        f"winback import transactions: {wall:.1f}s ({wall / base_wall:.2f}x the baseline), "
        f"peak RSS {peak:.2f} GiB"
    )
    ok = wall < 60 and peak < 4
    print(f"bar: < 60 s and < 4 GB -> {'PASS' if ok else 'FAIL'}")
    if args.partitions:
        part_argv = [*argv, "--partitions", str(args.partitions)]
        part_argv[part_argv.index(str(tmp / "out"))] = str(tmp / "out-partitioned")
        code = f"sys.argv = ['winback', *{part_argv!r}]; from cli.main import main; main()"
        p_wall, p_peak, p_out = _child(code)
        print(p_out.strip().splitlines()[-1] if p_out.strip() else "")
        print(
            f"winback import transactions --partitions {args.partitions}: {p_wall:.1f}s "
            f"({p_wall / wall:.2f}x the one-file import), peak RSS {p_peak:.2f} GiB "
            f"({p_peak / peak:.2f}x)"
        )
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)
    else:
        print(f"kept {tmp}")


if __name__ == "__main__":
    main()
