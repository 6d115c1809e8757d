"""How much should the label-free objective penalise a mask's area? Chosen on one result, reported on the others.

    python jobs/bench/objective_weight.py --choose jobs/bench/results/real-attention-space-s0.json \\
        --report jobs/bench/results/real-attention-space-s1.json jobs/bench/results/tune-demo-asha.json \\
        --out jobs/bench/results/objective-weight.json

The tune's objective (tuning.evidence_score) is mean P(tag | I.M) - P(tag | I.(1-M)) - w |M|/|I|: the
area term is what keeps the whole image (the trivial mask, for which the first two terms are at their best) from
winning. This re-scores stored settings for a range of w, without running anything: each input is a
`jobs/bench/real_attention.py --space` result (settings' mean terms, quality = their pseudo labels' mIoU against the
masks) or a `jobs/bench/tune.py` result (trials' mean terms at the last rung they reached, quality = their pseudo
labels' mIoU). w is chosen where the Spearman of objective and quality is highest on --choose, and reported on each
--report file: its Spearman there, and the quality of the setting that w would pick against the preset's own (the
setting named `default`, or the first trial, which is the preset's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from inetseg import tuning

WEIGHTS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)


def rows(result: dict) -> list[dict]:
    """(p_in, p_out, area, quality, default) of every scored setting of a stored result; the preset's first."""
    if "variants" in result:
        got = [{"name": name, "p_in": v["p_in"], "p_out": v["p_out"], "area": v["area"], "quality": v["miou"],
                "default": name == "default"} for name, v in result["variants"].items() if "objective" in v]
    elif "trials" in result:
        got = [{"name": t["trial"], "p_in": t["p_in"], "p_out": t["p_out"], "area": t["area"],
                "quality": t["pseudo_miou"], "default": i == 0}
               for i, t in enumerate(result["trials"]) if t.get("valid", True) and t.get("pseudo_miou") is not None]
    else:
        raise ValueError("neither a real_attention --space result (variants) nor a tune.py result (trials)")
    if len(got) < 3:
        raise ValueError(f"{len(got)} scored settings: a rank correlation needs at least 3")
    return got


def objective(row: dict, weight: float) -> float:
    return tuning.evidence_score(np.array([row["p_in"]]), np.array([row["p_out"]]), np.array([row["area"]]), weight)


def score(settings: list[dict], weight: float) -> dict:
    """Spearman of the weighted objective with quality; the quality of the setting it ranks first and the preset's."""
    values = [objective(r, weight) for r in settings]
    picked = settings[int(np.argmax(values))]
    default = next((r for r in settings if r["default"]), None)
    return {"spearman": tuning.spearman(values, [r["quality"] for r in settings]), "picked": picked["name"],
            "picked_quality": picked["quality"], "default_quality": default["quality"] if default else None}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--choose", required=True, help="result the weight is chosen on")
    p.add_argument("--report", nargs="+", required=True, help="results it is reported on")
    p.add_argument("--weights", default=",".join(map(str, WEIGHTS)), help="comma-separated area weights to try")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    try:
        weights = [float(w) for w in args.weights.split(",")]
        loaded = {path: rows(json.load(open(path))) for path in [args.choose, *args.report]}
    except (OSError, ValueError) as e:
        p.error(str(e))
    table = {path: {str(w): score(settings, w) for w in weights} for path, settings in loaded.items()}
    chosen = max(weights, key=lambda w: table[args.choose][str(w)]["spearman"])
    result = {"weights": weights, "chose_on": args.choose, "chosen_weight": chosen,
              "at_chosen": {path: table[path][str(chosen)] for path in args.report},
              "at_unit_weight": {path: table[path]["1.0"] for path in loaded if "1.0" in table[path]},
              "sweep": table, "settings": {path: len(s) for path, s in loaded.items()}}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"w chosen on {os.path.basename(args.choose)}: {chosen} "
          f"(spearman there {table[args.choose][str(chosen)]['spearman']:+.2f})")
    for path in args.report:
        s = table[path][str(chosen)]
        print(f"  {os.path.basename(path):<36} spearman {s['spearman']:+.2f}  picks {100 * s['picked_quality']:.1f} %"
              + (f" (preset {100 * s['default_quality']:.1f} %)" if s["default_quality"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
