"""The run-level keys of a pipeline config (the stage sections come from the registry) and the checks across
stages."""
from __future__ import annotations

from typing import Any

from inetseg.config.core import check


def check_run(self: Any, p: str = "") -> None:
    """Checks across stages (each stage's config has checked itself)."""
    check(self.num_cpus >= 0, f"{p}num_cpus must be >= 0")
    check(not (self.evaluate.pred or self.evaluate.gt),
          f"{p}evaluate.pred / evaluate.gt score mask files with `inetseg evaluate`; the pipeline scores its own "
          "predictions (give test=DIR instead)")
    check(not self.finetune.enabled or self.split.share > 0,
          f"{p}finetune.enabled needs split.share > 0 (the held-out images it labels)")
    check(not self.classifier_from_filter or (self.filter.rounds > 0 and self.filter.mode == "paper"),
          f"{p}classifier_from_filter needs filter.rounds > 0 and filter.mode=paper (one model per round)")


REGISTERED_MODEL = "inetseg-segmenter"  # the registered model's default name (pipeline, `inetseg models`)

RUN_FIELDS: list[tuple[str, type, Any]] = [
    ("out", str, "runs/default"),  # output root: local path or s3:// / gs:// URI
    ("source", str, "synth"),  # synth = the offline corpus; otherwise a folder per tag or a crawl folder
    ("test", str, ""),  # with a real source: a folder with images/, masks/ (class ids) and classes.json
    ("ray_address", str, ""),  # '' = start a local Ray (or join RAY_ADDRESS); 'auto' = existing cluster
    ("num_cpus", int, 0),  # local Ray only: CPUs to give it; 0 = all
    ("mlflow_uri", str, ""),  # '' = MLFLOW_TRACKING_URI, else sqlite under <out>
    ("experiment", str, "inetseg"),  # MLflow experiment name
    ("run_name", str, ""),  # MLflow parent run name; '' = generated
    # MLflow registered model that gets the run's final segmenter (predict.model) as a new version, tagged with
    # the run's mIoU; its first version becomes @champion. '' = register nothing (models are still logged).
    ("registered_model", str, REGISTERED_MODEL),
    ("resume", bool, True),  # skip stages whose output is complete with the same config
    # The final classifier starts from the last filter round's model instead of from random weights
    # (filter.mode=paper): the rounds already trained it on (nearly) the same images, so fewer epochs reach
    # further. Beyond the paper; on by the real preset, where 2.4k photos leave a from-scratch net weak.
    ("classifier_from_filter", bool, False),
    ("seed", int, 0),  # the run's seed: every stage seed left at 0 takes it (repeat a run with seed=1, 2, ...)
]
