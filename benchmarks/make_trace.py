"""Write a synthetic Mooncake-format trace of N requests with a real trace's statistics.

    python benchmarks/make_trace.py -n 100000 --out /tmp/mc100k.jsonl [--seed 1]
        [--fit-from TRACE]    # fit the statistics on TRACE now instead of the embedded ones
        [--shape conversation|agentic|fresh|fresh_short]  # invented (mooncake_synth.SHAPES)
    python benchmarks/make_trace.py --fit TRACE   # print the statistics of TRACE

The embedded statistics (kvroute.workloads.mooncake_synth.MOONCAKE_SYNTHETIC) are what
``--fit`` prints on the public Mooncake synthetic trace; see that module for the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kvroute.workloads.mooncake import read_trace, write_mooncake
from kvroute.workloads.mooncake_synth import (
    SHAPES,
    block_repeat_fraction,
    fit_stats,
    synth_records,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=12000, help="requests to generate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="the JSONL file to write")
    ap.add_argument("--fit-from", type=Path, help="fit the statistics on this trace")
    ap.add_argument("--fit", type=Path, help="only print the statistics of this trace")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mooncake",
                    help="the statistics to sample: the fitted Mooncake ones (default) or an "
                         "invented variation of them (kvroute.workloads.mooncake_synth.SHAPES)")
    args = ap.parse_args()
    if args.fit is not None:
        trace = read_trace(args.fit)
        recs = sorted(trace.records, key=lambda r: r.timestamp)
        print(repr(fit_stats(recs, trace.block_size)))
        print(f"block repeat fraction {block_repeat_fraction(recs):.4f}; mean input "
              f"{sum(r.input_length for r in recs) / len(recs):,.0f} tokens")
        return
    if args.out is None:
        raise SystemExit("make_trace: pass --out FILE (or --fit TRACE)")
    stats = SHAPES[args.shape]
    if args.fit_from is not None:
        if args.shape != "mooncake":
            raise SystemExit("make_trace: --shape and --fit-from exclude each other")
        trace = read_trace(args.fit_from)
        stats = fit_stats(sorted(trace.records, key=lambda r: r.timestamp), trace.block_size)
    n = write_mooncake(args.out, synth_records(args.n, stats, args.seed))
    blocks = "" if stats.block_size == 512 else f" (blocks of {stats.block_size} tokens: " \
        f"replay with --block-size {stats.block_size})"
    print(f"wrote {n:,} requests to {args.out}{blocks}")


if __name__ == "__main__":
    main()
