"""Ray Train across two Ray nodes on this machine (ray.cluster_utils.Cluster): DDP whose loss falls,
a worker SIGKILLed mid-training that the run survives from its last checkpoint."""
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
import ray
from conftest import ingested_corpus, kill_tree

from inetseg import config as C
from inetseg.stages import classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def images(two_nodes, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    # Clean tags: these tests are about DDP across nodes, and 60 SGD steps on noisy tags do not
    # reliably lower the loss (CI saw a flat curve at ln 3).
    return root, ingested_corpus(root, 3, 32, p_wrong_tag=0, p_no_object=0, p_multi=0, p_small_or_cut=0)


def _cfg(root, images, name, **kw):
    base = {"images": images, "out": str(root / name), "width": 0.25, "input_size": 64, "epochs": 10,
            "batch_size": 16, "lr": 0.01, "lr_decay_steps": 1000, "holdout_fraction": 0.1,
            "compute": {"num_workers": 2, "cpus_per_worker": 1, "torch_threads": 1,
                        "placement_strategy": "STRICT_SPREAD"}}
    return C.from_dict(C.ClassifierConfig, C.deep_merge(base, kw))


def test_two_nodes_two_ddp_workers_loss_falls(images):
    root, imgs = images
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    meta = classifier.run(_cfg(root, imgs, "ddp"))
    epochs = [h for h in meta["history"] if not h.get("mid_epoch")]
    assert [h["epoch"] for h in epochs] == list(range(10))  # every epoch, not only the kept checkpoints'
    assert epochs[-1]["world_size"] == 2 and epochs[-1]["num_nodes"] == 2  # one rank on each node
    losses = [h["loss"] for h in epochs]
    # Single epochs are noisy (4 augmented steps each; CI saw 0.95 ... 0.78, 1.00), so: the best later
    # epoch clearly below the first, and the typical late epoch below it too. A run that does not learn
    # (CI once: 1.12, 1.20, 1.11, 1.17, 1.30, ...) fails both.
    assert min(losses[2:]) < 0.9 * losses[0], losses
    assert float(np.median(losses[-5:])) < losses[0], losses
    # The saved model predicts in eval mode (filter scores, attention): with its BatchNorm statistics
    # recomputed at the final weights it must beat its own initialisation there too. Before precise
    # BatchNorm a run whose training loss fell 1.09 -> 0.53 scored 1.21 here (2.64 when reproduced).
    assert epochs[-1]["bn_recalibrated_images"] > 0
    loss, acc, init_loss = eval_mode_scores(imgs, root / "ddp" / "model.pt")
    assert loss < 0.9 * init_loss and acc > 0.5, (loss, acc, init_loss)


def eval_mode_scores(images: str, model_file) -> tuple[float, float, float]:
    """Eval-mode cross-entropy and accuracy of a saved 3-class classifier on every image (whole, resized),
    and the cross-entropy of a freshly initialised one."""
    import torch
    import torch.nn.functional as F

    from inetseg import imaging, shards
    from inetseg.models.classifier import build_classifier
    from inetseg.train.data import augment_images, to_input

    t = shards.read_table(images, columns=["label", "image", "status"]).to_pylist()
    rows = [r for r in t if r["status"] == "ok"]
    x = to_input(torch.from_numpy(augment_images([imaging.decode_rgb(r["image"]) for r in rows], 64, False)))
    y = torch.tensor([int(r["label"]) - 1 for r in rows])
    model = build_classifier(3, 0.25)
    model.eval()
    with torch.no_grad():
        init_loss = F.cross_entropy(model(x), y).item()
        model.load_state_dict(torch.load(str(model_file), map_location="cpu"))
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item(), init_loss


def registered_checkpoints(storage: str) -> int:
    """Checkpoints Ray Train's controller has registered (its snapshot file). A checkpoint folder on
    disk is not enough: a worker killed before the controller polled it leaves an orphan folder."""
    import json

    n = 0
    for root, _, files in os.walk(storage):
        if "checkpoint_manager_snapshot.json" in files:
            try:
                with open(os.path.join(root, "checkpoint_manager_snapshot.json")) as f:
                    n = max(n, len(json.load(f).get("checkpoint_results", [])))
            except (OSError, ValueError):
                pass
    return n


def _kill_a_worker_after_checkpoint(storage: str, done: threading.Event, killed: list) -> None:
    """Once a checkpoint is registered, SIGKILL one RayTrainWorker process."""
    deadline = time.time() + 300
    while time.time() < deadline and not done.is_set():
        if registered_checkpoints(storage) >= 1:
            # Only this test's own cluster (raylets started by this process, their workers below them): on a
            # shared machine another session's RayTrainWorker would die instead and this run never restart.
            for p in psutil.Process().children(recursive=True):
                try:
                    cmdline = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                if "ray::RayTrainWorker" in cmdline:
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                    return
        time.sleep(0.05)


def test_worker_killed_mid_training_resumes_from_checkpoint(images):
    root, imgs = images
    cfg = _cfg(root, imgs, "killed", epochs=10, checkpoint_every_steps=4, max_failures=2)
    storage = cfg.out + "_ray_train"
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker_after_checkpoint, args=(storage, done, killed), daemon=True)
    killer.start()
    try:
        meta = classifier.run(cfg)
    finally:
        done.set()
        killer.join(timeout=10)
    assert killed, "no worker was killed: the run finished first"
    resumed = [h["resumed_step"] for h in meta["history"] if h.get("resumed_step")]
    # The restarted group began at a checkpoint, not at step 0.
    assert resumed and min(resumed) >= 4, [(h.get("step"), h.get("resumed_step")) for h in meta["history"]]
    final = [h for h in meta["history"] if not h.get("mid_epoch")][-1]
    assert final["epoch"] == 9 and (root / "killed" / "model.pt").exists()


def test_killed_stage_rerun_resumes_from_newest_checkpoint(images):
    """The driver of `inetseg classifier` SIGKILLed after two checkpoints; the same command again
    continues from the newest checkpoint instead of step 0."""
    import subprocess
    import sys

    root, imgs = images
    out = root / "restart"
    cmd = [sys.executable, "-m", "inetseg.cli", "classifier", f"images={imgs}", f"out={out}", "width=0.25",
           "input_size=64", "epochs=12", "batch_size=16", "holdout_fraction=0.1", "checkpoint_every_steps=4",
           "compute.torch_threads=1", "--num-cpus", "2"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = str(out) + "_ray_train"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if registered_checkpoints(storage) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before the kill"
    at_kill = sorted(d for _, dirs, _ in os.walk(storage) for d in dirs if d.startswith("checkpoint_"))
    kill_tree(proc)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    meta = json.loads((out / "_SUCCESS.json").read_text())
    resumed = [h.get("resumed_step") or 0 for h in meta["history"]]
    assert max(resumed) >= 4, ([(h.get("step"), h.get("resumed_step")) for h in meta["history"]], at_kill)
