"""How far a small preset's whole pipeline beats the all-background baseline, over seeds: the margin the end-to-end
test may assert.

    python jobs/bench/ci_margin.py --out jobs/bench/results/ci-margin.json [--seeds 0,1,2,3,4] [--run DIR]
                                   [--preset ci] [key=value ...]

Runs `inetseg pipeline` with the preset (default ci) once per seed (key seed=: the synthetic corpus, the splits
and every network's initialisation move with it), each in <run>/seed<s> (finished stages are reused on a re-run), and
writes per seed the test mIoU (after CRF), the all-background baseline's, the pseudo labels' and the seconds,
then the margin (mIoU - baseline) as median / min / max / std and `assert_margin`: half the smallest margin
seen, rounded down to a tenth of a point (0 when a seed learned nothing: then no margin is reliable). The JSON
is written after every seed ("complete": false until the last). The test runs one seed; a pipeline that learns
nothing sits at the baseline, so a margin well under the worst seed's fails only when something broke.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jobs.bench.common import machine, spread, versions  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ci_margin.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated run seeds (default: five)")
    ap.add_argument("--run", default="runs/ci-margin", help="run root: one pipeline out per seed under it")
    ap.add_argument("--preset", default="ci", help="pipeline preset (default: ci; the end-to-end test's run: "
                    "--preset demo finetune.enabled=false)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="pipeline keys over the preset")
    return ap.parse_args(argv)


def assert_margin(margins: list[float]) -> float:
    """Half the smallest margin, rounded down to 0.001 (a tenth of a mIoU point); 0 when any seed learned nothing."""
    return max(0.0, math.floor(min(margins) / 2 * 1000) / 1000)


def write(args: argparse.Namespace, rows: list[dict], complete: bool) -> dict:
    """The JSON so far: each seed's row, the margin's spread and the margin a test may assert."""
    margins = [r["margin"] for r in rows]
    result = {"preset": args.preset, "overrides": args.overrides, "run": args.run, "complete": complete,
              "rows": rows, "margin": {**spread(margins), "std": statistics.pstdev(margins)},
              "assert_margin": assert_margin(margins), "machine": machine(), "versions": versions()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from inetseg import config as C
    from inetseg import pipeline

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        cfgs = [pipeline.load_config(args.preset, None, [f"out={os.path.join(args.run, f'seed{s}')}", f"seed={s}",
                                                  *args.overrides]) for s in seeds]
    except (ValueError, C.ConfigError) as e:
        print(f"ci_margin.py: {e}", file=sys.stderr)
        return 2
    rows = []
    for seed, cfg in zip(seeds, cfgs):
        t0 = time.time()
        summary = pipeline.run(cfg)
        rows.append({"seed": seed, "miou": summary["miou"], "miou_no_crf": summary.get("miou_no_crf"),
                     "baseline_miou": summary["baseline_miou"], "pseudo_label_miou": summary.get("pseudo_label_miou"),
                     "margin": summary["miou"] - summary["baseline_miou"], "seconds": time.time() - t0,
                     "stage_seconds": summary.get("seconds")})
        print(f"seed {seed}: mIoU {100 * summary['miou']:.1f} %, baseline {100 * summary['baseline_miou']:.1f} %, "
              f"margin {100 * rows[-1]['margin']:+.1f} points ({rows[-1]['seconds']:.0f} s)", flush=True)
        result = write(args, rows, complete=len(rows) == len(seeds))  # each seed kept if a later one is stopped
    print(f"margin over {len(rows)} seeds: median {100 * result['margin']['median']:+.1f}, min "
          f"{100 * result['margin']['min']:+.1f}, max {100 * result['margin']['max']:+.1f} points; "
          f"assert_margin {100 * result['assert_margin']:.1f} points -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
