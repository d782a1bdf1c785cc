"""occmllm.dataset: the reader of the synthetic layout gives back what the generator wrote."""

import numpy as np
import pytest

from data_tools.synth import __main__ as synth
from occmllm.dataset import SynthDataset, load_shape
from occmllm.render import project


def test_reader_round_trip(tmp_path):
    out = tmp_path / "data"
    assert synth.main(["--out", str(out), "--n", "3", "--seed", "2", "--workers", "1", "--split-test", "0"]) == 0
    ds = SynthDataset(out, "train")
    assert len(ds) == 3 and ds.ids == sorted(ds.ids)
    assert list(ds.manifest.columns[:8]) == ["id", "split", "class", "visible_fraction", "round", "thin", "long",
                                             "clear"]
    sid = ds.ids[1]
    assert ds.load_image(sid).shape == (256, 256, 3) and ds.load_render(sid).dtype == np.uint8
    amodal, visible = ds.load_masks(sid)
    shape = load_shape(ds.shape_path(sid))
    assert shape.vertices.dtype == np.float32 and shape.faces.dtype == np.int32 and shape.K.shape == (3, 3)
    assert shape.occupancy.dtype == bool and shape.occupancy.shape == (32, 32, 32)
    lo, hi = shape.bounds
    inside = (shape.vertices >= lo - 1e-6) & (shape.vertices <= hi + 1e-6)
    assert inside.all()  # the grid box holds the whole mesh
    assert ds.row(sid)["visible_fraction"] == pytest.approx(visible.sum() / amodal.sum(), abs=1e-6)
    uv = project(shape.vertices, shape.K).astype(int)
    ok = (uv >= 0).all(1) & (uv < 256).all(1)
    assert amodal[uv[ok, 1], uv[ok, 0]].mean() > 0.9  # mesh vertices land on the amodal mask
    assert len(SynthDataset(out, "test")) == 0


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m data_tools.synth"):
        SynthDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        SynthDataset(tmp_path, "val")
