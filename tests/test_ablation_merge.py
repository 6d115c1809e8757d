"""jobs/ablation_merge.py: seeds and rows from several ablation JSONs in one table, claims recomputed."""
import json

import pytest

from jobs import ablation_merge


def _result(rows: dict[str, dict[int, float]], preset="real") -> dict:
    return {"corpus": "photos", "preset": preset, "runs": {}, "pseudo_truth": "masked",
            "rows": {name: {"per_seed": {str(s): {"miou": v, "test_images": 10} for s, v in seeds.items()}}
                     for name, seeds in rows.items()}}


def test_later_file_wins_and_claims_are_recomputed(tmp_path):
    a = _result({"fused": {0: 0.40}, "fused_smooth": {0: 0.41}, "crf": {0: 0.50, 1: 0.99}})
    b = _result({"fused": {1: 0.42, 2: 0.44}, "fused_smooth": {1: 0.45, 2: 0.47}, "crf": {1: 0.52, 2: 0.54}})
    paths = []
    for name, d in (("a.json", a), ("b.json", b)):
        paths.append(str(tmp_path / name))
        (tmp_path / name).write_text(json.dumps(d))
    out = tmp_path / "m.json"
    assert ablation_merge.main(["--out", str(out), *paths]) == 0
    got = json.loads(out.read_text())
    assert got["seeds"] == [0, 1, 2] and not got["complete"]  # four of seven rows
    assert got["rows"]["crf"]["miou"] == pytest.approx(0.52)  # b's seed 1 (0.52) replaced a's (0.99)
    assert got["rows"]["fused"]["spread"]["miou"]["max_min"] == pytest.approx(0.04)
    assert got["merged_from"]["fused"] == {"0": paths[0], "1": paths[1], "2": paths[1]}
    smooth = got["goal_details"]["smoothing_beats_fused"]
    assert smooth["difference"] == pytest.approx(100 * (0.44333333 - 0.42), abs=1e-3) and smooth["met"]
    assert smooth["no_difference"]  # 2.3 points < the crf row's max-min (4 points)
    assert "seed 1, 2 from b.json" in (tmp_path / "m.md").read_text()


def test_inputs_of_different_presets_are_a_one_line_error(tmp_path, capsys):
    for name, preset in (("a.json", "real"), ("b.json", "demo")):
        (tmp_path / name).write_text(json.dumps(_result({"crf": {0: 0.5}}, preset)))
    assert ablation_merge.main(["--out", str(tmp_path / "m.json"), str(tmp_path / "a.json"),
                                str(tmp_path / "b.json")]) == 2
    assert "preset 'demo' differs" in capsys.readouterr().err
