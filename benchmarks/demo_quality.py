"""Quality on the demo's data: the whole demo, then its report's verdict (issue 7's bar).

    python -m benchmarks.demo_quality [--data DIR] [--quick]

Runs `hubbleclip demo` in process (synthetic sky, local archive, the pipeline on a temporary
Prefect) and reads the report it writes: held-out image->text top-10% of the fine-tuned tiny
model, the untrained one (`base`) and the shuffled-pairs control. The bar: fine-tuned - base
>= 0.5 and the control within 0.05 of chance. A second run on the same --data is served from
the stage caches, so this costs a full demo once (about 8 minutes on 2 cores) and seconds after.
--quick uses the quick demo, which trains too little to meet the bar: it prints, never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py) on a box without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="./bench-data/demo")
    parser.add_argument("--quick", action="store_true", help="the quick demo (prints, does not apply the bar)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: telemetry only fails

    from flows.demo import run_demo
    from schemas.pipeline import DemoParams

    data = Path(args.data + ("-quick" if args.quick else "")).expanduser().resolve()
    started = time.perf_counter()
    result = run_demo(DemoParams(data=str(data), quick=args.quick))
    seconds = time.perf_counter() - started
    report = json.loads(Path(result.report).read_text())
    models, checks = report["models"], report["checks"]
    print(f"\ndemo quality on {report['n_items']} held-out images ({report['split']} split), "
          f"{seconds:.0f} s ({len(result.cache_hits)}/{len(result.stages)} stages from cache)")
    print(f"{'model':<12}{'i2t top-10%':>13}{'t2i top-10%':>13}")
    for name in ("finetuned", "base", "shuffled"):
        if name in models:
            print(f"{name:<12}{models[name]['i2t_top10pct']:>13.3f}{models[name]['t2i_top10pct']:>13.3f}")
    print(f"fine-tuned - base: {checks['finetuned_minus_base_i2t_top10pct']:+.3f} (bar >= "
          f"{checks['margin_required']}); shuffled - chance: {checks['shuffled_minus_chance_i2t_top10pct']:+.3f} "
          f"(bar within {checks['chance_tolerance']})")
    print(report.get("verdict", ""))
    met = bool(checks.get("finetuned_beats_base")) and bool(checks.get("shuffled_at_chance"))
    if args.quick:
        print("quick demo: the bar applies to the default demo only")
        return 0
    print("PASS" if met else "FAIL")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
