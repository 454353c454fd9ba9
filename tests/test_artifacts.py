import json

import pytest
import torch

from imagegen import artifacts
from imagegen.artifacts import load_artifact, read_header, save_artifact
from imagegen.errors import ImagegenError
from imagegen.models import SeedClassifier, build_model
from imagegen.report import build_report


def test_round_trip(tmp_path):
    net = SeedClassifier(image_size=8, num_classes=3)
    save_artifact(tmp_path / "run", "seed-classifier", {"image_size": 8, "num_classes": 3}, net, {"classes": "abc"})
    for path in (tmp_path / "run", tmp_path / "run" / "model.json", tmp_path / "run" / "model.safetensors"):
        art = load_artifact(path, "seed-classifier")
        again = build_model(art.kind, art.config)
        again.load_state_dict(art.state)
        x = torch.randn(2, 1, 8, 8)
        assert torch.equal(again(x), net(x)) and art.meta == {"classes": "abc"}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_pickles_are_refused_never_loaded(tmp_path, monkeypatch):
    torch.save(SeedClassifier().state_dict(), tmp_path / "model.pt")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(ImagegenError, match="not an imagegen checkpoint.*never loaded"):
        load_artifact(tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps({"format": "imagegen-artifact", "kind": "seed-classifier"}))
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.pt").read_bytes())
    with pytest.raises(ImagegenError, match="not a safetensors file"):
        load_artifact(tmp_path)


def test_foreign_json_and_wrong_kind(tmp_path):
    save_artifact(tmp_path, "evaluator", {}, torch.nn.Linear(2, 2), {})
    with pytest.raises(ImagegenError, match="'evaluator' model, but a 'seed-classifier'"):
        load_artifact(tmp_path, "seed-classifier")
    (tmp_path / "model.json").write_text('{"name": "resnet"}')
    with pytest.raises(ImagegenError, match="no 'format'"):
        load_artifact(tmp_path)
    (tmp_path / "model.json").write_text("garbage{")
    with pytest.raises(ImagegenError, match="not JSON"):
        load_artifact(tmp_path)
    with pytest.raises(ImagegenError, match="does not exist"):
        load_artifact(tmp_path / "missing")


def test_header_is_read_without_the_weights_and_refused_like_the_artifact(tmp_path, monkeypatch):
    save_artifact(tmp_path / "run", "evaluator", {"width": 2}, torch.nn.Linear(2, 2), {"classes": "ab"})
    monkeypatch.setattr(artifacts, "load_file", lambda *a, **k: pytest.fail("the weights were read"))
    doc = read_header(tmp_path / "run", "evaluator")
    assert (doc["kind"], doc["config"], doc["meta"]) == ("evaluator", {"width": 2}, {"classes": "ab"})
    with pytest.raises(ImagegenError, match="'evaluator' model, but a 'unet'"):
        read_header(tmp_path / "run", "unet")
    (tmp_path / "run" / "model.json").write_text("garbage{")
    with pytest.raises(ImagegenError, match="not JSON"):
        read_header(tmp_path / "run")
    with pytest.raises(ImagegenError, match="not JSON"):  # the report of a run refuses it the same way
        build_report(tmp_path / "run")
