"""One yes/no model per species: class 1 is the species (the original inverted it to 0)."""

import json

import pytest

from mlpatterns.predictor import OnnxPredictor
from mlpatterns.training import iris

EXAMPLES = {"setosa": [5.1, 3.5, 1.4, 0.2], "versicolor": [5.9, 3.0, 4.2, 1.5], "virginica": [6.3, 3.3, 6.0, 2.5]}


@pytest.mark.parametrize("species", sorted(EXAMPLES))
def test_each_binary_model_recognises_its_species(tmp_path, species):
    artifacts = iris.build("binary", target=species, out=tmp_path)
    metrics = json.loads(artifacts.metrics.read_text())
    assert metrics["accuracy"] >= (1.0 if species == "setosa" else 0.9)
    predictor = OnnxPredictor(artifacts.model, artifacts.labels).load()
    rows = list(EXAMPLES.values())
    labels = [predictor.label_of(c) for c in predictor.predict(rows).classes]
    assert labels == [species if name == species else f"not_{species}" for name in EXAMPLES]
