"""Table 1 from several `jobs/ablation.py` JSONs: seeds or rows run at different times, put in one table.

    python jobs/ablation_merge.py --out F.json A.json B.json [...]

Per row and seed, the entry of the last file that has it wins. The summary per row (mean, max-min, std over
its seeds), the noise and the claims are recomputed exactly as jobs/ablation.py computes them; the table's
seeds are those any row has (a row's "per seed" column shows which it has). The inputs must be of one corpus
and preset. Writes F.json (with `merged_from`: which file gave each row's seed) and F.md (the table, the
claims and that provenance); no picture.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import ablation_table as AT  # noqa: E402


def merge(inputs: list[tuple[str, dict]]) -> dict:
    """The merged result of (path, ablation JSON) pairs, later pairs winning per row and seed."""
    first = inputs[0][1]
    for path, d in inputs[1:]:
        for key in ("corpus", "preset"):
            if d.get(key) != first.get(key):
                raise ValueError(f"{path}: {key} {d.get(key)!r} differs from {inputs[0][0]}'s {first.get(key)!r}")
    per_seed: dict[str, dict[int, dict]] = {}
    origin: dict[str, dict[str, str]] = {}
    runs: dict[str, str] = {}
    for path, d in inputs:
        runs.update(d.get("runs", {}))
        for name, row in d["rows"].items():
            for seed, entry in row["per_seed"].items():
                per_seed.setdefault(name, {})[int(seed)] = entry
                origin.setdefault(name, {})[seed] = path
    order = [n for n in AT.BY_NAME if n in per_seed]
    summary = {n: AT.summarise(dict(sorted(per_seed[n].items()))) for n in order}
    nz = AT.noise(summary)
    details = AT.goals(summary, nz["points"] if nz else None)
    seeds = sorted(set.union(*(set(per_seed[n]) for n in order)))
    every = all(sorted(per_seed[n]) == seeds for n in order)
    return {"corpus": first.get("corpus"), "pseudo_truth": first.get("pseudo_truth"), "preset": first.get("preset"),
            "run": first.get("run"), "name": first.get("name", ""), "fast": any(d.get("fast") for _, d in inputs),
            "overrides": first.get("overrides", []), "seeds": seeds, "runs": runs,
            "test_images": next(iter(summary.values())).get("test_images"),
            "settings": {n: {"what": AT.BY_NAME[n].what, "attention": AT.BY_NAME[n].attention,
                             "base": AT.BY_NAME[n].base} for n in order},
            "row_order": order, "rows": summary, "noise": nz, "goals": {k: g["met"] for k, g in details.items()},
            "goal_details": details, "complete": len(order) == len(AT.BY_NAME) and every,
            "merged_from": {n: dict(sorted(origin[n].items())) for n in order}}


def markdown(result: dict) -> str:
    """AT.markdown plus where each row's seeds came from."""
    lines = ["", "Merged (jobs/ablation_merge.py); each row's seeds from:", ""]
    for name, seeds in result["merged_from"].items():
        by_file: dict[str, list[str]] = {}
        for seed, path in seeds.items():
            by_file.setdefault(os.path.basename(path), []).append(seed)
        lines.append(f"- {name}: " + "; ".join(f"seed {', '.join(s)} from {f}" for f, s in by_file.items()))
    return AT.markdown(result) + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ablation_merge.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write (.md beside it)")
    ap.add_argument("inputs", nargs="+", help="ablation JSONs, in order: a later file wins per row and seed")
    args = ap.parse_args(argv)
    try:
        inputs = []
        for path in args.inputs:
            with open(path) as f:
                inputs.append((path, json.load(f)))
        result = merge(inputs)
    except (OSError, ValueError, KeyError) as e:
        print(f"ablation_merge.py: {e}", file=sys.stderr)
        return 2
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    md = markdown(result)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
