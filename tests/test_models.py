"""npconv.models against twins built independently from torch.nn.

Each model is rebuilt here, layer by layer, from ``torch.nn`` following the
stack documented in its builder's docstring (not derived from the npconv
object), the npconv weights are copied into it with ``load_state_dict``, and
in float64 we compare: forward output, loss, input gradient, every parameter
gradient, BatchNorm running statistics, and 5 training steps with SGD
(momentum / nesterov / weight decay / dampening), Adam and AdamW.

Tolerance: float64, compared relative to each array's largest magnitude.
The two sides sum convolutions in different orders, so differences are
rounding noise that grows with depth (measured: 1e-15..1.5e-14 relative for
one pass, <= 1e-14 after 5 SGD steps, <= 2e-12 after 5 Adam/AdamW steps,
whose m / sqrt(v) magnifies the relative rounding of small gradients); we
allow 1e-10, the issue's bar, still far below any real mismatch (a wrong
padding, stride, BN momentum or update rule shows at >= 1e-4).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from npconv import models, nn
from npconv.optim import SGD, Adam, AdamW

torch = pytest.importorskip("torch")
from torch_twins import (torch_alexnet, torch_alexnet_small, torch_digits_cnn,  # noqa: E402
                         torch_lenet5, torch_resnet)

tnn = torch.nn

RTOL = 1e-10


# name -> (npconv kwargs, torch builder, input shape (batched), expected #params)
CASES = {
    "digits_cnn": (dict(), torch_digits_cnn, (5, 1, 8, 8), 9_930),
    "lenet5": (dict(), torch_lenet5, (3, 1, 32, 32), 61_706),
    "lenet5-28-relu": (dict(input_size=28, activation="relu"),
                       lambda **kw: torch_lenet5(input_size=28, activation="relu", **kw),
                       (3, 1, 28, 28), 61_706),
    "resnet8": (dict(), lambda **kw: torch_resnet(8, **kw), (4, 3, 32, 32), 78_042),
    "resnet20": (dict(), lambda **kw: torch_resnet(20, **kw), (2, 3, 32, 32), 272_474),
    "alexnet_small": (dict(), torch_alexnet_small, (2, 3, 32, 32), 1_790_154),
    "alexnet_small-lrn": (dict(lrn=True), lambda **kw: torch_alexnet_small(lrn=True, **kw),
                          (2, 3, 32, 32), 1_790_154),
}


def build_pair(case, seed=0, num_classes=10):
    kwargs, torch_builder, shape, _ = CASES[case]
    name = case.split("-")[0]
    ours = models.get_model(name, dtype=np.float64, rng=seed, num_classes=num_classes, **kwargs)
    theirs = torch_builder(num_classes=num_classes).double()
    ours_sd = ours.state_dict()
    theirs_sd = theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for key in ours_sd:
        assert ours_sd[key].shape == tuple(theirs_sd[key].shape), key
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours_sd.items()})
    return ours, theirs, shape


def assert_close(ours, theirs, what, rtol=RTOL):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert np.shape(ours) == theirs.shape, what
    scale = max(np.abs(theirs).max(), 1e-30)
    err = np.abs(np.asarray(ours, dtype=np.float64) - theirs).max() / scale
    assert err <= rtol, f"{what}: max error {err:.3g} x scale {scale:.3g} > {rtol}"


def assert_params_close(ours, theirs, grads=False, rtol=RTOL):
    tparams = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        if grads:
            assert_close(param.grad, tparams[name].grad, f"grad of {name}", rtol)
        else:
            assert_close(param.data, tparams[name], name, rtol)
    tbuffers = dict(theirs.named_buffers())
    for name, buffer in ours.named_buffers():
        if not grads:
            assert_close(buffer, tbuffers[name], f"buffer {name}", rtol)


def batch(shape, seed, num_classes=10):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.integers(0, num_classes, size=shape[0])


# ---------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_param_count_and_dtype(case):
    kwargs, _, shape, expected = CASES[case]
    model = models.get_model(case.split("-")[0], rng=0, **kwargs)
    assert sum(p.data.size for p in model.parameters()) == expected
    assert all(p.data.dtype == np.float32 for p in model.parameters())  # default dtype
    out = model(np.zeros(shape, dtype=np.float32))
    assert out.shape == (shape[0], 10) and out.dtype == np.float32


def test_same_seed_same_weights():
    a = models.resnet8(rng=3).state_dict()
    b = models.resnet8(rng=3).state_dict()
    c = models.resnet8(rng=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_resnet_init_is_he_fan_out():
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (C_out * k * k)); 16*9 = 144 -> 0.118
    weights = models.resnet20(rng=0).state_dict()["3.0.0.block.0.weight"]  # (16, 16, 3, 3)
    assert abs(weights.std() - np.sqrt(2 / 144)) < 0.01
    bn = models.resnet20(rng=0).state_dict()
    assert np.all(bn["1.weight"] == 1) and np.all(bn["1.bias"] == 0)


def test_registry_and_errors():
    assert set(models.MODELS) == {"digits_cnn", "lenet5", "resnet8", "resnet20", "alexnet",
                                  "alexnet_small"}
    with pytest.raises(ValueError, match="unknown model name 'vgg'.*alexnet.*resnet20"):
        models.get_model("vgg")
    with pytest.raises(ValueError, match="'input_size' must be 32 or 28"):
        models.lenet5(input_size=64)
    with pytest.raises(ValueError, match="'activation' must be one of"):
        models.lenet5(activation="gelu")
    with pytest.raises(ValueError, match="'depth' must be 6n \\+ 2"):
        models.resnet(21)
    assert models.resnet(14, rng=0)[3].__len__() == 2  # n = 2 blocks per stage


def test_alexnet_227():
    """The paper's AlexNet: keys/shapes equal to the torch twin (built on the
    meta device: no memory), 60,965,224 parameters with the two-GPU groups,
    and a float32 forward of one 227x227 image equal to torch's."""
    start = time.perf_counter()
    model = models.alexnet(rng=0)
    assert sum(p.data.size for p in model.parameters()) == 60_965_224
    meta = torch_alexnet(device="meta").state_dict()
    ours = model.state_dict()
    assert list(ours) == list(meta)
    assert all(ours[k].shape == tuple(meta[k].shape) for k in ours)
    full = models.alexnet(groups=False, rng=0)
    assert full.state_dict()["3.weight"].shape == (256, 96, 5, 5)
    assert sum(p.data.size for p in full.parameters()) == 62_378_344
    del full

    twin = torch_alexnet()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in ours.items()})
    model.eval(), twin.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    out = model(x)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert out.shape == (1, 1000) and out.dtype == np.float32
    # float32, ~10^4-term sums in different orders over 8 layers: 1e-4 of scale.
    assert_close(out, torch.from_numpy(expected), "alexnet logits", rtol=1e-4)
    assert time.perf_counter() - start < 30


# ---------------------------------------------------------------------------
# one forward/backward pass, float64
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_matches_torch(case):
    ours, theirs, shape = build_pair(case)
    if case.startswith("alexnet_small"):  # Dropout masks come from different RNGs: compare in eval
        ours.eval(), theirs.eval()
    x, target = batch(shape, 1)

    loss_fn, tloss_fn = nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()
    out = ours(x)
    loss = loss_fn(out, target)
    dx = ours.backward(loss_fn.backward())

    tx = torch.from_numpy(x.copy()).requires_grad_()
    tout = theirs(tx)
    tloss = tloss_fn(tout, torch.from_numpy(target))
    tloss.backward()

    assert_close(out, tout, "logits")
    assert abs(loss - tloss.item()) <= RTOL * abs(tloss.item())
    assert_close(dx, tx.grad, "input gradient")
    assert_params_close(ours, theirs, grads=True)
    assert_params_close(ours, theirs)  # includes running_mean / running_var / num_batches_tracked

    # eval mode (BatchNorm on the running statistics just updated)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert_close(ours(x), theirs(torch.from_numpy(x)), "eval logits")


# ---------------------------------------------------------------------------
# 5 optimizer steps, float64 (the "done when")
# ---------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd-nesterov-wd": (SGD, torch.optim.SGD,
                        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    "sgd-dampening": (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.1,
                                                 weight_decay=1e-3)),
    "adam-wd": (Adam, torch.optim.Adam, dict(lr=2e-3, weight_decay=1e-2)),
    "adamw": (AdamW, torch.optim.AdamW, dict(lr=2e-3, weight_decay=5e-2)),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("case", ["digits_cnn", "lenet5", "resnet8"])
def test_five_training_steps_match_torch(case, opt_name):
    ours, theirs, shape = build_pair(case, seed=2)
    opt_cls, topt_cls, kwargs = OPTIMIZERS[opt_name]
    opt, topt = opt_cls(ours.parameters(), **kwargs), topt_cls(theirs.parameters(), **kwargs)
    loss_fn, tloss_fn = nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()
    for step in range(5):
        x, target = batch(shape, 100 + step)
        opt.zero_grad()
        loss = loss_fn(ours(x), target)
        ours.backward(loss_fn.backward())
        opt.step()

        topt.zero_grad()
        tloss = tloss_fn(theirs(torch.from_numpy(x)), torch.from_numpy(target))
        tloss.backward()
        topt.step()
        assert abs(loss - tloss.item()) <= RTOL * abs(tloss.item()), f"loss at step {step}"
    assert_params_close(ours, theirs)  # weights and BatchNorm running statistics
    ours.eval(), theirs.eval()
    x, _ = batch(shape, 999)
    with torch.no_grad():
        assert_close(ours(x), theirs(torch.from_numpy(x)), "eval logits after training")


# ---------------------------------------------------------------------------
# finite differences (independent of torch)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["lenet5", "resnet8"])
def test_gradients_by_central_differences(case):
    """Loss gradient w.r.t. a few random input entries and entries of every
    parameter, against (L(t+h) - L(t-h)) / 2h in float64.

    h = 1e-7: the ReLUs make L only piecewise smooth, and with BatchNorm some
    of the ~10^5 pre-activations lie within h of their kink, which costs
    O(h) (measured 1.4e-6 at h = 1e-6, 1.5e-9 at h = 1e-7). Rounding is
    ~eps*L/h ~ 5e-9, so we allow 1e-5 of the gradient's scale + 1e-8."""
    kwargs, _, shape, _ = CASES[case]
    model = models.get_model(case, dtype=np.float64, rng=5, **kwargs)
    shape = (2,) + shape[1:]
    x, target = batch(shape, 7)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), target)
    dx = model.backward(loss_fn.backward())

    def loss_at():
        return loss_fn(model(x), target)

    rng = np.random.default_rng(0)
    checks = [("input", x, dx)] + [(name, p.data, p.grad) for name, p in model.named_parameters()]
    h = 1e-7
    for name, array, grad in checks:
        scale = max(np.abs(grad).max(), 1e-8)
        for flat in rng.choice(array.size, size=min(2, array.size), replace=False):
            index = np.unravel_index(flat, array.shape)
            saved = array[index]
            array[index] = saved + h
            up = loss_at()
            array[index] = saved - h
            down = loss_at()
            array[index] = saved
            numeric = (up - down) / (2 * h)
            assert abs(numeric - grad[index]) <= 1e-5 * scale + 1e-8, \
                f"{name}{index}: numeric {numeric:.10g} vs analytic {grad[index]:.10g}"


# ---------------------------------------------------------------------------
# LocalResponseNorm (AlexNet's optional layer, defined in npconv.models)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("shape", [(2, 7, 3, 4), (1, 3, 5)])
def test_local_response_norm_matches_torch(size, shape):
    rng = np.random.default_rng(size)
    x, dy = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    kwargs = dict(alpha=0.3, beta=0.75, k=2.0)  # large alpha so the window matters
    layer = models.LocalResponseNorm(size, **kwargs)
    tlayer = tnn.LocalResponseNorm(size, **kwargs)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = tlayer(tx)
    ty.backward(torch.from_numpy(dy))
    y = layer(x)
    dx = layer.backward(dy)
    # float64, a handful of ops per element: 1e-13 relative to scale
    assert_close(y, ty, "LRN output", rtol=1e-13)
    assert_close(dx, tx.grad, "LRN input gradient", rtol=1e-13)

    # central differences of sum(y * dy), h = 1e-6 (smooth: error O(h^2) + eps/h)
    h = 1e-6
    for flat in rng.choice(x.size, size=5, replace=False):
        index = np.unravel_index(flat, x.shape)
        xp, xm = x.copy(), x.copy()
        xp[index] += h
        xm[index] -= h
        numeric = (np.sum(layer(xp) * dy) - np.sum(layer(xm) * dy)) / (2 * h)
        assert abs(numeric - dx[index]) <= 1e-7 * max(np.abs(dx).max(), 1.0)


def test_local_response_norm_errors():
    with pytest.raises(ValueError, match="'size' must be an int >= 1"):
        models.LocalResponseNorm(0)
    layer = models.LocalResponseNorm(3)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="LocalResponseNorm"):
        layer(np.zeros((2, 3)))
    layer(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="'dy' must have the output's shape"):
        layer.backward(np.zeros((1, 2, 4)))
