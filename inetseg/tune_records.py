"""What a search keeps beside its trials: the settings it was scored with (a resumed search must not change them)
and its trials as a table (values, each rung's objective and terms, whether ASHA stopped it)."""
from __future__ import annotations

import json
from typing import Any

from inetseg import config as C
from inetseg import storage
from inetseg.config.tuning import TuneConfig

# The tune keys that decide how trials are drawn and scored: a search resumed with other values would rank trials
# scored two ways against each other.
SCORING_KEYS = ("objective", "area_weight", "val", "val_share", "val_images", "space", "search", "scheduler",
                "reduction_factor", "seed")
SETTINGS = "search_settings.json"


def scoring_settings(tcfg: TuneConfig) -> dict:
    """The search's SCORING_KEYS and their values."""
    values = C.to_dict(tcfg)
    return {k: values[k] for k in SCORING_KEYS}


def check_resumable(tcfg: TuneConfig) -> None:
    """ConfigError when the search to resume was started with other values of SCORING_KEYS (a search from before
    the record was kept has none: it resumes as it is)."""
    path = storage.join(tcfg.out, SETTINGS)
    if not storage.exists(path):
        return
    before, now = json.loads(storage.read_text(path)), scoring_settings(tcfg)
    changed = [k for k in SCORING_KEYS if k in before and before[k] != now[k]]
    if changed:
        was = ", ".join([f"{k}={before[k]!r}" for k in changed if k != "space"]
                        + (["another space"] if "space" in changed else []))
        raise C.ConfigError(f"tune: the search in {tcfg.out} was started with {was}; resuming it would rank trials "
                            "scored two ways. Give the same values, or tune.resume=false to start a new search "
                            "(finished stages are still reused)")


def rung_objectives(result: Any) -> dict[str, float]:
    """The objective a trial reported at each rung it reached (stage -> value), from its Ray Tune history."""
    df = result.metrics_dataframe
    if df is None or "stage" not in df or "objective" not in df:
        return {}
    return {str(s): float(o) for s, o in zip(df["stage"], df["objective"]) if isinstance(s, str)}


def rung_terms(result: Any) -> dict[str, dict[str, float]]:
    """The label-free objective's terms at each rung (stage -> p_in, p_out, area): what a reader needs to see which
    term ranks the trials, and to try another weighting of them without re-running a search."""
    df = result.metrics_dataframe
    terms = [k for k in ("p_in", "p_out", "area") if df is not None and k in df]
    if not terms or "stage" not in df:
        return {}
    return {str(row["stage"]): {k: float(row[k]) for k in terms} for _, row in df.iterrows()
            if isinstance(row["stage"], str)}


def trials_table(grid: Any) -> list[dict]:
    """Every trial: its values, last objective, each rung's objective, how many reports, whether ASHA stopped it,
    its final model."""
    rows = []
    for r in grid:
        m = r.metrics or {}
        rows.append({"trial": m.get("trial_id", ""), "config": r.config, "objective": m.get("objective"),
                     "rungs": rung_objectives(r), "rung_terms": rung_terms(r),
                     "reports": m.get("training_iteration", 0), "stage": m.get("stage", ""),
                     "finished": m.get("stage") == "final",
                     "valid": bool(m.get("valid", 0)), "model": m.get("model", ""),
                     "error": str(r.error) if r.error else "",
                     **{k: m[k] for k in ("p_in", "p_out", "area", "val_images", "val_miou") if k in m}})
    return rows
