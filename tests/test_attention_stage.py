"""The attention stage's two layouts, Eqn 9-10 inside the attention actors or in CPU tasks after them (what GPU
actors use, so the segments do not hold the GPU), write the same pseudo labels."""
import pytest

from inetseg import config as C
from inetseg import shards
from inetseg.stages import attention


def test_auto_takes_post_processing_out_of_gpu_actors_only():
    assert attention.post_in_actor(C.AttentionConfig())
    gpu = C.ComputeConfig(use_gpu=True)
    assert not attention.post_in_actor(C.AttentionConfig(compute=gpu))
    assert attention.post_in_actor(C.AttentionConfig(postprocess="actor", compute=gpu))
    assert not attention.post_in_actor(C.AttentionConfig(postprocess="tasks"))


@pytest.mark.parametrize("objectness", [0.0, 1.0])
def test_post_processing_in_tasks_writes_what_the_actors_write(ray_session, tmp_path, objectness):
    from conftest import ingested_corpus, random_classifier

    images = ingested_corpus(tmp_path, classes=3, per_class=10)
    model = random_classifier(tmp_path / "classifier", list(shards.read_marker(images)["classes"]))
    tables, metas = {}, {}
    for post in ("actor", "tasks"):
        cfg = C.AttentionConfig(images=images, model=model, out=str(tmp_path / post), input_size=64,
                                objectness=objectness, postprocess=post,
                                compute=C.ComputeConfig(num_actors=1, cpus_per_worker=1, inference_batch_size=4))
        metas[post] = attention.run(cfg)
        tables[post] = shards.read_table(cfg.out).sort_by("id")
    assert tables["actor"].num_rows == metas["actor"]["images"] == metas["tasks"]["images"] >= 25
    assert tables["actor"].equals(tables["tasks"])  # every row, mask and attention byte for byte
