"""Print the conformance table for one or more sweeps.

    python -m tests.conformance                         # onnxruntime fp32 (what CI asserts)
    python -m tests.conformance --sweep all             # + openvino fp32, onnxruntime fp16 / int8
    python -m tests.conformance --show wrong,crash      # list the cases that ended so
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.conformance.cases import SUITES, collect
from tests.conformance.harness import STATUSES, SWEEPS, run_all, table

# Shared with the pytest run (its cache folder), so the node cases are generated once.
DEFAULT_DATA = Path(".pytest_cache") / "d" / "conformance"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="append", choices=[*SWEEPS, "all"],
                        help="configuration(s) to build every case with (default: onnxruntime-fp32)")
    parser.add_argument("--suite", action="append", choices=SUITES, help="only these suites (default: all)")
    parser.add_argument("--match", default="", help="only cases whose suite/name contains this text")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--show", default="", help=f"list cases with these statuses ({','.join(STATUSES)})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where generated node cases go")
    args = parser.parse_args(argv)
    sweeps = list(SWEEPS) if "all" in (args.sweep or []) else (args.sweep or ["onnxruntime-fp32"])
    cases = [c for c in collect(args.data, tuple(args.suite or SUITES)) if args.match in c.id]
    show = {s for s in args.show.split(",") if s}
    for name in sweeps:
        start = time.perf_counter()
        outcomes = run_all(cases, SWEEPS[name], args.jobs)
        print(f"\n### {name}: {len(cases)} cases in {time.perf_counter() - start:.0f} s\n")
        print(table(outcomes, SWEEPS[name]))
        for outcome in outcomes:
            if outcome.status in show:
                print(f"{outcome.status:10} {outcome.case}: {outcome.detail}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
