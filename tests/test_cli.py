"""The command line: --help everywhere, one-line errors with exit code 2 for user mistakes."""
import subprocess
import sys
from pathlib import Path

import pytest

from inetseg import registry

REPO = Path(__file__).resolve().parents[1]
STAGES = [s.name for s in registry.REGISTRY.stages]  # every registered stage is a command


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "inetseg.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def job(*args):
    return subprocess.run([sys.executable, str(REPO / "jobs" / "full_pipeline.py"), *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["pipeline", *STAGES])
def test_help_lists_keys(command):
    proc = cli(command, "--help")
    assert proc.returncode == 0
    assert "keys" in proc.stdout and "default:" in proc.stdout


def test_segment_help_says_what_it_writes():
    proc = cli("segment", "--help")
    for what in ("masks/NAME.png", "overlays/NAME.jpg", "probs/NAME.npy", "classes.json", "summary.json",
                 "failed.json", "crf_params.iterations", "compute.inference_batch_size       int        default: 4"):
        assert what in proc.stdout, what


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0]


def test_unknown_key():
    _one_line_error(job("classifier.nope=1"), "classifier.nope")
    _one_line_error(cli("ingest", "source=/x", "out=/y", "colour=red"), "colour")


def test_bad_value():
    _one_line_error(job("classifier.epochs=lots"), "classifier.epochs")
    _one_line_error(job("crf.enabled=maybe"), "crf.enabled")


def test_missing_input(tmp_path):
    _one_line_error(cli("classifier", f"images={tmp_path}/none", f"out={tmp_path}/o"), "images=")
    _one_line_error(cli("ingest", f"out={tmp_path}/o"), "source=")
    _one_line_error(job("--config", str(tmp_path / "missing.yaml")), "missing.yaml")


def test_unknown_preset_and_print_config():
    _one_line_error(job("--preset", "huge"), "huge")
    proc = job("--print-config", "classifier.epochs=3")
    assert proc.returncode == 0 and "epochs: 3" in proc.stdout
