"""Ray Job entry point: the whole inetseg pipeline.

    python jobs/full_pipeline.py                       # offline demo: synthetic corpus, local Ray + MLflow
    python jobs/full_pipeline.py --config jobs/configs/paper.yaml out=s3://bucket/run1
    ray job submit --working-dir . -- python jobs/full_pipeline.py [--config FILE] [--out DIR] [key=value ...]
"""
from __future__ import annotations

import os
import sys

# Under `ray job submit --working-dir .` the package is in the working dir, not necessarily installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inetseg.cli import add_pipeline_args, job

if __name__ == "__main__":
    sys.exit(job("pipeline", "full_pipeline.py", __doc__, add_pipeline_args, sys.argv[1:]))
