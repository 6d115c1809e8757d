"""Ray Job entry point: a Ray Tune search over the pipeline's thresholds (`inetseg tune`).

    python jobs/tune.py                                   # the demo, default space, 12 trials, label-free objective
    ray job submit --working-dir . -- python jobs/tune.py --preset paper --config F.yaml --tune jobs/configs/tune.yaml
"""
from __future__ import annotations

import os
import sys

# Under `ray job submit --working-dir .` the package is in the working dir, not necessarily installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inetseg.cli import TUNE_HELP, add_tune_args, job

if __name__ == "__main__":
    sys.exit(job("tune", "tune.py", f"{__doc__}\n{TUNE_HELP}", add_tune_args, sys.argv[1:]))
