"""Config loading: defaults, YAML, overrides, and one-line errors for user mistakes."""
import pytest

from inetseg import config as C
from inetseg.pipeline import load_config


def test_overrides_are_typed_against_the_schema():
    cfg = C.load(C.ClassifierConfig, None, ["epochs=3", "lr=0.5", "compute.use_gpu=true"])
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 0.5
    assert cfg.compute.use_gpu is True


def test_unknown_key_is_named():
    with pytest.raises(C.ConfigError, match="unknown config key 'classifier.nope'"):
        load_config("demo", None, ["classifier.nope=1"])


def test_bad_value_is_named():
    with pytest.raises(C.ConfigError, match="classifier.epochs"):
        load_config("demo", None, ["classifier.epochs=many"])
    with pytest.raises(C.ConfigError, match="delta_background <= delta_object"):
        load_config("demo", None, ["attention.delta_object=0.2", "attention.delta_background=0.5"])


def test_yaml_file_and_section(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("classifier:\n  epochs: 7\nattention:\n  delta_object: 0.7\n")
    cfg = load_config("demo", str(f), ["attention.delta_background=0.4"])
    assert cfg.classifier.epochs == 7
    assert cfg.attention.delta_object == 0.7 and cfg.attention.delta_background == 0.4
    stage = C.load(C.ClassifierConfig, str(f), [], section="classifier")
    assert stage.epochs == 7


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        load_config("demo", str(tmp_path / "missing.yaml"), [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        load_config("demo", str(bad), [])


def test_paths_chain_from_out(tmp_path):
    cfg = load_config("demo", None, [f"out={tmp_path}", "finetune.enabled=false"])
    assert cfg.ingest.out == str(tmp_path / "images")
    assert cfg.filter.images == cfg.ingest.out
    # The final classifier and the attention read the last filter round's kept images.
    assert cfg.classifier.images == cfg.attention.images == str(tmp_path / "filter" / "round3" / "images")
    # With fine-tuning on (the presets' default) they read the split's training cut of them instead.
    ft = load_config("demo", None, [f"out={tmp_path}"])
    assert ft.finetune.enabled and ft.split.images == str(tmp_path / "filter" / "round3" / "images")
    assert ft.classifier.images == ft.attention.images != ft.split.images
    assert ft.classifier.images.startswith(str(tmp_path / "split"))
    no_filter = load_config("demo", None, [f"out={tmp_path}", "filter.rounds=0", "finetune.enabled=false"])
    assert no_filter.classifier.images == no_filter.ingest.out
    assert cfg.evaluate.predictions == cfg.crf.out
    uri = load_config("demo", None, ["out=s3://bucket/run"])
    assert uri.segmenter.out == "s3://bucket/run/segmenter"


def test_fingerprint_changes_with_config():
    a, b = C.ClassifierConfig(), C.ClassifierConfig(epochs=2)
    assert C.fingerprint(a) == C.fingerprint(C.ClassifierConfig())
    assert C.fingerprint(a) != C.fingerprint(b)


def test_flatten_for_mlflow():
    flat = C.flatten(C.to_dict(C.SegmenterConfig()))
    assert flat["compute.num_workers"] == 1
    assert flat["aspp_rates"] == "6,12,18"


def test_classifier_from_filter_starts_from_the_last_round():
    cfg = load_config("demo", None, ["out=/tmp/x", "classifier_from_filter=true", "filter.rounds=2"])
    assert cfg.classifier.init_from == "/tmp/x/filter/round2/classifier"
    assert load_config("demo", None, ["out=/tmp/x"]).classifier.init_from == ""
    with pytest.raises(C.ConfigError, match="classifier_from_filter"):
        load_config("demo", None, ["classifier_from_filter=true", "filter.mode=oof"])
    with pytest.raises(C.ConfigError, match="classifier_from_filter"):
        load_config("demo", None, ["classifier_from_filter=true", "filter.rounds=0"])


def test_run_seed_reaches_every_stage_left_at_zero():
    cfg = load_config("demo", None, ["seed=3", "segmenter.seed=7"])
    assert (cfg.synth.seed, cfg.classifier.seed, cfg.filter.train.seed, cfg.segmenter.seed) == (3, 3, 3, 7)
    assert load_config("demo").classifier.seed == 0


def test_pipeline_refuses_file_evaluation_keys():
    with pytest.raises(C.ConfigError, match="evaluate.pred"):
        load_config("demo", None, ["evaluate.pred=/p", "evaluate.gt=/g"])


def test_a_partial_nested_section_keeps_the_fields_own_defaults():
    from inetseg.config import SegmentConfig

    cfg = C.load(SegmentConfig, None, ["compute.num_actors=2"])
    assert cfg.compute.num_actors == 2 and cfg.compute.inference_batch_size == 4  # SegmentConfig's, not 32


@pytest.mark.parametrize("cls, key", [(C.CrawlConfig, "tags"), (C.IngestConfig, "classes")])
@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", "a\\b", "~root"])
def test_tags_and_classes_that_would_leave_their_folder_are_refused(cls, key, name):
    with pytest.raises(C.ConfigError, match="is not a plain name"):
        C.load(cls, None, [f"{key}=ok,{name}"])


def test_a_traversing_tag_is_a_one_line_error_on_the_command_line(tmp_path, capsys):
    from inetseg.cli import main

    assert main(["crawl", f"out={tmp_path}", "tags=cat,../../etc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a plain name" in err[0]
    assert not any(tmp_path.parent.parent.glob("etc*"))
