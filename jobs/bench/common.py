"""What every benchmark writes beside its figures: the machine, the library versions, medians with min and max."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
import time

# The libraries a figure here can depend on; each is reported with the version that ran (or "absent").
LIBRARIES = ("ray", "torch", "torchvision", "numpy", "opencv-python-headless", "opencv-python", "pyarrow",
             "pillow", "scikit-image", "pydensecrf2", "img2dataset", "mlflow")


def versions() -> dict[str, str]:
    """Installed version of each library in LIBRARIES, and Python's."""
    out = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict:
    """Where the figures were measured."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def spread(values: list[float]) -> dict:
    """median, min, max and n of repeated measurements (the median is the figure to quote)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": list(values)}


def ratio_spread(num: list[float], den: list[float]) -> dict:
    """Per-repeat ratios num[i] / den[i] of measurements taken side by side, as spread()."""
    return spread([a / b for a, b in zip(num, den)])


def tree_memory(root) -> dict | None:
    """RSS and PSS summed over a psutil.Process and its descendants, and the root's own RSS; None once it is gone."""
    import psutil

    try:
        family = [root, *root.children(recursive=True)]
        root_rss = root.memory_info().rss
    except psutil.NoSuchProcess:
        return None
    rss = pss = 0
    for p in family:
        try:
            m = p.memory_full_info()
            rss, pss = rss + m.rss, pss + m.pss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return {"rss": rss, "pss": pss, "root_rss": root_rss}
