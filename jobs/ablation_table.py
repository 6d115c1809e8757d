"""Table 1's rows and the arithmetic over them (pure: no Ray, no MLflow, no torch): which stages each row
runs in its own folder, the mean and spread over run seeds, the paper's claims checked, Markdown.

jobs/ablation.py runs the rows (jobs/ablation_rows.py); tests/test_ablation.py checks these on plain dicts.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

TRIMAP = {"maps": "fused", "smoothing": True, "trimap": True}  # the pipeline's own attention (the paper's)


@dataclass(frozen=True)
class Row:
    """One line of Table 1: the attention settings it changes, and where it starts from."""

    name: str
    what: str  # one line for --help and the Markdown table
    attention: dict = field(default_factory=lambda: dict(TRIMAP))  # attention.* keys set for this row
    start: str = "attention"  # the first row stage it runs in its own folder ...
    base: str = ""  # ... the stages before `start` are this row's (its folders, reused as they are)
    finetune: bool = False  # the finetune stage is in this row's run
    crf: bool = False  # the crf stage is in this row's run


ROWS: tuple[Row, ...] = (
    Row("forward", "forward CAM only (Eqn 5), one cut", {"maps": "forward", "smoothing": False, "trimap": False}),
    Row("backward", "excitation product B_2 * B_3b only (Eqn 7), one cut",
        {"maps": "backward", "smoothing": False, "trimap": False}),
    Row("fused", "fused, Eqn 8, one cut", {"maps": "fused", "smoothing": False, "trimap": False}),
    Row("fused_smooth", "+ segment smoothing (Eqn 9), one cut", {"maps": "fused", "smoothing": True, "trimap": False}),
    Row("fused_smooth_trimap", "+ trimap (Eqn 10), ignored band", TRIMAP),
    Row("online_finetune", "+ online fine-tuning (Eqn 11-12) of that segmenter", start="finetune",
        base="fused_smooth_trimap", finetune=True),
    Row("crf", "+ dense CRF on those predictions", start="crf", base="online_finetune", finetune=True, crf=True),
)
BY_NAME = {r.name: r for r in ROWS}
METRICS = ("miou", "miou_no_crf", "pseudo_miou", "precision", "ignored")  # averaged over seeds when present
# The rows whose spread stands for run-to-run noise, first present wins: the paper's default configuration.
NOISE_ROWS = ("crf", "online_finetune", "fused_smooth_trimap")
# (id, claim, row, rows it must beat, by at least this many mIoU points, strictly)
GOALS = (
    ("fused_beats_forward_and_backward", "fused > forward and backward", "fused", ("forward", "backward"), 0.0, True),
    ("smoothing_beats_fused", "fused_smooth > fused", "fused_smooth", ("fused",), 0.0, True),
    ("trimap_not_worse", "fused_smooth_trimap >= fused_smooth", "fused_smooth_trimap", ("fused_smooth",), 0.0, False),
    ("finetune_adds_half_a_point", "online_finetune >= fused_smooth_trimap + 0.5", "online_finetune",
     ("fused_smooth_trimap",), 0.5, False),
    ("crf_adds_half_a_point", "crf >= online_finetune + 0.5", "crf", ("online_finetune",), 0.5, False),
)


def with_dependencies(names: list[str]) -> list[str]:
    """The rows to run for `names`, in table order: a row needs the row it builds on (and that one's)."""
    need = set()
    for name in names:
        while name:
            need.add(name)
            name = BY_NAME[name].base
    return [r.name for r in ROWS if r.name in need]


def stage_owners(row: Row, stages: list[str]) -> dict[str, str]:
    """stage -> the row whose folder holds it, for the row stages in data-flow order: the row from its `start`
    on, its base row from the base's start up to there, and so on down the chain."""
    owners: dict[str, str] = {}
    end = len(stages)
    r: Row | None = row
    while r is not None:
        begin = stages.index(r.start)
        owners.update({s: r.name for s in stages[begin:end]})
        end, r = begin, BY_NAME[r.base] if r.base else None
    return owners


def summarise(per_seed: dict[int, dict]) -> dict:
    """One row over seeds: its headline metrics (the mean), per_seed, mean and spread (max-min and the sample
    std, None with one seed) of every metric in METRICS it has."""
    entries = list(per_seed.values())
    keys = [k for k in METRICS if all(e.get(k) is not None for e in entries)]
    mean = {k: statistics.fmean(e[k] for e in entries) for k in keys}
    spread = {k: {"max_min": max(e[k] for e in entries) - min(e[k] for e in entries),
                  "std": statistics.stdev(e[k] for e in entries)} for k in keys} if len(entries) > 1 else None
    last = entries[-1]
    out = {k: v for k, v in last.items() if k not in METRICS and k not in ("per_class_iou", "seconds")}
    return {**out, **mean, "per_seed": {str(s): e for s, e in per_seed.items()}, "mean": mean, "spread": spread}


def noise(rows: dict[str, dict]) -> dict | None:
    """Run-to-run noise of test mIoU: the first NOISE_ROWS row's max-min over seeds (None with one seed)."""
    for name in NOISE_ROWS:
        if rows.get(name, {}).get("spread"):
            return {"row": name, "points": 100 * rows[name]["spread"]["miou"]["max_min"], "measure": "max-min"}
    return None


def goals(rows: dict[str, dict], noise_points: float | None = None) -> dict[str, dict]:
    """Each claim whose rows ran: the difference in mIoU points (means over seeds), whether it holds, and
    whether the difference is within the noise (smaller than noise_points: 'no difference')."""
    out = {}
    for gid, text, row, beats, need, strict in GOALS:
        if row not in rows or any(b not in rows for b in beats):
            continue
        diff = 100 * (rows[row]["miou"] - max(rows[b]["miou"] for b in beats))
        out[gid] = {"claim": text, "difference": diff, "met": diff > need if strict else diff >= need,
                    "no_difference": noise_points is not None and abs(diff) < noise_points}
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def table_lines(result: dict) -> list[str]:
    """The Markdown table: a header, a separator, then one line per row starting '| <row> |'."""
    multi = len(result["seeds"]) > 1
    head = ["row", "what", "test mIoU", *(["max-min", "std", "per seed"] if multi else []),
            "pseudo mIoU", "precision", "ignored"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for name in [n for n in result.get("row_order", BY_NAME) if n in result["rows"]]:  # Table 1's order: the
        r = result["rows"][name]  # JSON on disk has its keys sorted
        cells = [name, BY_NAME[name].what, _pct(r["miou"])]
        if multi:
            sp = (r.get("spread") or {}).get("miou", {})
            cells += [_pct(sp.get("max_min")), _pct(sp.get("std")),
                      " / ".join(_pct(e["miou"]) for e in r["per_seed"].values())]
        cells += [_pct(r.get("pseudo_miou")), _pct(r.get("precision")), _pct(r.get("ignored"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def goal_lines(result: dict) -> list[str]:
    """A line per checked claim: yes / NO, or 'no difference' when within the noise."""
    out = []
    nz = result.get("noise")
    for g in result["goal_details"].values():
        verdict = "yes" if g["met"] else "NO"
        if g["no_difference"] and nz:
            verdict = f"no difference ({verdict} on the means; within the {nz['row']} row's spread)"
        out.append(f"- {g['claim']}: {verdict} ({g['difference']:+.1f} points)")
    if nz:
        out.append(f"- noise: a difference under {nz['points']:.1f} points (the {nz['row']} row's test mIoU, "
                   f"max-min over seeds {', '.join(map(str, result['seeds']))}) counts as no difference")
    return out


def title(result: dict) -> str:
    seeds = ", ".join(map(str, result["seeds"]))
    what = "mean over seeds " + seeds if len(result["seeds"]) > 1 else "seed " + seeds
    fast = "; --fast: a check of the machinery, not of the claims" if result.get("fast") else ""
    return f"Table 1, trained ({result['corpus']}; {what}{fast})"


def console(result: dict) -> str:
    """What the job prints at the end: the title, the table, the claims."""
    return "\n".join([title(result), "", *table_lines(result), "", *goal_lines(result)])


def markdown(result: dict) -> str:
    """The whole Markdown report: what ran, the table (percent), the claims."""
    lines = [f"# {title(result)}", "",
             f"Each row trains the segmenter with the same schedule on the same images (split/train) and scores it "
             f"on the test split ({result['test_images']} images), without CRF but for the crf row. Pseudo-label "
             f"columns: {result['pseudo_truth']}. Preset {result['preset']}, overrides: "
             f"{' '.join(result['overrides']) or 'none'}.", "", *table_lines(result), "", *goal_lines(result)]
    return "\n".join(lines) + "\n"


def row_line(seed: int, name: str, entry: dict) -> str:
    """The console line printed as a row finishes."""
    parts = [f"seed {seed}  {name:<20} test mIoU {_pct(entry['miou']):>5}"]
    if entry.get("miou_no_crf") is not None:
        parts.append(f"(no CRF {_pct(entry['miou_no_crf'])})")
    if entry.get("pseudo_miou") is not None:
        parts.append(f"pseudo mIoU {_pct(entry['pseudo_miou']):>5}  precision {_pct(entry['precision']):>5}  "
                     f"ignored {_pct(entry['ignored']):>5}")
    if entry.get("finetune"):
        parts.append(f"kept {entry['finetune']['kept']} of {entry['finetune']['images']} held-out images")
    parts.append(f"({entry['seconds']:.0f} s)")
    return "  ".join(parts)
