"""npconv.summary: rows, shapes, counts, and that it leaves the model untouched."""
from __future__ import annotations

import numpy as np
import pytest

from npconv import models, nn
from npconv.summary import ModelSummary, summary


def test_digits_cnn_rows():
    table = summary(models.digits_cnn(rng=0), (5, 1, 8, 8))
    assert isinstance(table, str) and isinstance(table, ModelSummary)
    shapes = [(r["name"], r["type"], r["output_shape"], r["params"]) for r in table.rows]
    assert shapes == [
        ("0", "Conv2d", (5, 16, 8, 8), 160),
        ("1", "ReLU", (5, 16, 8, 8), 0),
        ("2", "Conv2d", (5, 32, 8, 8), 4640),
        ("3", "ReLU", (5, 32, 8, 8), 0),
        ("4", "MaxPool2d", (5, 32, 4, 4), 0),
        ("5", "Flatten", (5, 512), 0),
        ("6", "Linear", (5, 10), 5130),
    ]
    assert table.total_params == table.trainable_params == 9930
    assert table.output_shape == (5, 10)
    assert "Total params: 9,930" in table
    assert "(5, 32, 4, 4)" in table and "4,640" in table
    assert repr(table) == str(table)  # shows as the table in a REPL


def test_unbatched_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    table = summary(model, (3, 6, 6))
    assert [r["output_shape"] for r in table.rows] == [(4, 6, 6), (4, 6, 6)]


def test_resnet_nested_rows_and_depth():
    model = models.resnet8(rng=0)
    table = summary(model, (2, 3, 32, 32))
    by_name = {r["name"]: r for r in table.rows}
    assert by_name["4.0.0"]["type"] == "Residual"
    assert by_name["4.0.0"]["output_shape"] == (2, 32, 16, 16)
    assert by_name["4.0.0.shortcut.0"]["output_shape"] == (2, 32, 16, 16)
    assert by_name["4.0.0.shortcut.0"]["params"] == 16 * 32
    assert by_name["5.0.0.block.3"]["depth"] == 5
    assert by_name["6"]["output_shape"] == (2, 64, 1, 1)
    # rows of containers count only their own parameters: the sum is the total
    assert sum(r["params"] for r in table.rows) == table.total_params == 78_042
    shallow = summary(model, (2, 3, 32, 32), depth=1)
    assert "3.0" not in shallow and "Total params: 78,042" in shallow
    assert shallow.count("\n") < table.count("\n")


def test_no_side_effects():
    """BatchNorm running stats, train mode and the forward cache survive a summary."""
    model = models.resnet8(dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    out = model(x)
    dy = np.random.default_rng(1).standard_normal(out.shape)
    before = model.state_dict()

    summary(model, (4, 3, 32, 32), dtype=np.float64)

    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    assert "forward" not in model.__dict__
    # backward still belongs to the forward on x, not to the zeros of the summary
    dx = model.backward(dy)
    fresh = models.resnet8(dtype=np.float64, rng=0)
    fresh(x)
    np.testing.assert_array_equal(dx, fresh.backward(dy))

    model.eval()
    summary(model, (1, 3, 32, 32))
    assert not any(m.training for m in model.modules())


def test_errors():
    model = models.digits_cnn(rng=0)
    with pytest.raises(ValueError, match="'input_shape' must be a tuple of positive ints"):
        summary(model, (2, 0, 8, 8))
    with pytest.raises(ValueError, match="'input_shape'"):
        summary(model, "2x1x8x8x")
    with pytest.raises(ValueError, match="'depth' must be an int >= 1"):
        summary(model, (1, 1, 8, 8), depth=0)
    with pytest.raises(TypeError, match="'model' must be an npconv.nn.Module"):
        summary(object(), (1, 1, 8, 8))
    # a failing layer is named in a note; the model is still restored
    with pytest.raises(ValueError) as info:
        summary(model, (1, 3, 8, 8))
    if hasattr(info.value, "add_note"):  # Python >= 3.11
        assert any("layer '0' (Conv2d)" in note for note in info.value.__notes__)
    assert "forward" not in model[0].__dict__
