"""Rewrite a Mooncake-format trace so that its middle third arrives ``--factor`` times as
fast (the gaps between its arrivals divided by the factor; the first and last thirds
keep theirs): load that changes within one run, where a router must adapt.

    python benchmarks/burst_trace.py IN.jsonl OUT.jsonl [--factor 3] [--limit N]

With ``kvroute sim --trace OUT --load RHO`` the load is the mean over the whole run, so
(for a trace that arrives at an even pace) the middle third runs at about
``RHO * (2 F + 1) / 3`` and the rest at ``RHO * (2 F + 1) / (3 F)``: with F = 3 and RHO =
0.6, 1.4 and 0.47 (docs/routing-results.md, "Load that changes").
"""

from __future__ import annotations

import argparse
import dataclasses

from kvroute.errors import ConfigError
from kvroute.workloads.mooncake import read_mooncake, write_mooncake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="a Mooncake-format JSONL trace")
    ap.add_argument("out", help="the JSONL file to write")
    ap.add_argument("--factor", type=float, default=3.0,
                    help="how many times faster the middle third arrives (default 3)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N requests")
    args = ap.parse_args()
    if not args.factor > 0:
        ap.error(f"--factor must be > 0, got {args.factor}")
    try:
        records = sorted(read_mooncake(args.trace), key=lambda r: r.timestamp)[:args.limit]
    except ConfigError as e:
        ap.error(str(e))
    n = len(records)
    if n == 0:
        ap.error(f"{args.trace}: no requests (--limit {args.limit})")
    out, t = [], records[0].timestamp
    for i, rec in enumerate(records):
        if i:
            gap = rec.timestamp - records[i - 1].timestamp
            t += gap / args.factor if n // 3 <= i < 2 * n // 3 else gap
        out.append(dataclasses.replace(rec, timestamp=t))
    write_mooncake(args.out, out)
    print(f"wrote {n:,} requests to {args.out}: requests {n // 3:,} to {2 * n // 3 - 1:,} "
          f"{args.factor:g}x as fast")


if __name__ == "__main__":
    main()
