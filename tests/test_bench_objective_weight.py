"""jobs/bench/objective_weight.py: the size term's weight chosen on one stored result, reported on another."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "jobs", "bench", "objective_weight.py")


def _space_result(path, seed: int, weight: float) -> None:
    """A real_attention --space result whose settings' quality is exactly the objective at `weight`."""
    rng = np.random.default_rng(seed)
    variants = {}
    for i in range(10):
        p_in, p_out, area = rng.uniform(0.5, 0.9), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.6)
        variants["default" if i == 0 else f"sample {i}"] = {
            "miou": p_in - p_out - weight * area, "objective": 0.0, "p_in": p_in, "p_out": p_out, "area": area}
    path.write_text(json.dumps({"variants": variants}))


def _tune_result(path) -> None:
    trials = [{"trial": f"t{i}", "valid": True, "p_in": 0.6 + 0.01 * i, "p_out": 0.3, "area": 0.2,
               "pseudo_miou": 0.5 - 0.01 * i} for i in range(5)]  # the objective ranks them backwards
    trials.append({"trial": "bad", "valid": False, "p_in": 0, "p_out": 0, "area": 0, "pseudo_miou": None})
    path.write_text(json.dumps({"trials": trials}))


def _run(*args):
    return subprocess.run([sys.executable, BENCH, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_weight_is_chosen_on_one_result_and_reported_on_the_others(tmp_path):
    _space_result(tmp_path / "a.json", 0, 0.5)
    _space_result(tmp_path / "b.json", 1, 0.5)
    _tune_result(tmp_path / "t.json")
    got = _run("--choose", tmp_path / "a.json", "--report", tmp_path / "b.json", tmp_path / "t.json",
               "--weights", "0,0.5,1", "--out", tmp_path / "out.json")
    assert got.returncode == 0, got.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["chosen_weight"] == 0.5  # quality is the objective at 0.5: ranked perfectly there only
    b = out["at_chosen"][str(tmp_path / "b.json")]
    assert b["spearman"] == pytest.approx(1.0) and b["picked_quality"] >= b["default_quality"]
    t = out["at_chosen"][str(tmp_path / "t.json")]
    assert t["spearman"] == pytest.approx(-1.0) and t["picked"] == "t4" and t["default_quality"] == 0.5
    assert out["settings"][str(tmp_path / "t.json")] == 5  # the refused trial is not a setting
    assert set(out["at_unit_weight"]) == {str(tmp_path / n) for n in ("a.json", "b.json", "t.json")}


def test_a_file_that_is_not_a_result_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"something": 1}))
    got = _run("--choose", tmp_path / "x.json", "--report", tmp_path / "x.json", "--out", tmp_path / "o.json")
    assert got.returncode == 2 and "neither a real_attention --space result" in got.stderr
    assert "Traceback" not in got.stderr
