"""npconv.optim against torch.optim: SGD, Adam, AdamW and the LR schedules.

Each optimizer runs 5 steps on the same float64 parameters and gradients as
its torch twin (which takes its single-tensor CPU path); parameters and state
are compared after every step. The update rules are the same sequence of
float operations, but torch's vectorised CPU kernels may fuse ``a + alpha*b``
into one FMA, so results can differ by an ulp per operation: we allow
rtol=1e-12 (a few hundred ulps of float64 - ample for 5 steps of ~10 ops,
and far below any real rule difference, which shows at 1e-3..1e-8).
"""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from npconv.optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR

torch = pytest.importorskip("torch")

RTOL = 1e-12
SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


class Param:
    """The minimal parameter the optimizers need: ``.data`` and ``.grad``."""

    def __init__(self, data):
        self.data = data
        self.grad = None


def make_params(seed, dtype=np.float64, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    ours = [Param(rng.standard_normal(s).astype(dtype)) for s in shapes]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in ours]
    return ours, theirs


def grads_for_step(seed, step, dtype=np.float64, shapes=SHAPES):
    rng = np.random.default_rng([seed, step])
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def set_grads(ours, theirs, grads, skip=()):
    """Give both sides the same gradients; indices in ``skip`` get None."""
    for i, (p, t, g) in enumerate(zip(ours, theirs, grads)):
        p.grad = None if i in skip else g.copy()
        t.grad = None if i in skip else torch.from_numpy(g.copy())


def assert_close(ours, theirs, rtol=RTOL):
    for i, (p, t) in enumerate(zip(ours, theirs)):
        expected = t.detach().numpy()
        scale = np.abs(expected).max()
        np.testing.assert_allclose(p.data, expected, rtol=0, atol=rtol * scale,
                                   err_msg=f"parameter {i}")


STATE_NAMES = {"momentum_buffer": "momentum_buffer", "exp_avg": "exp_avg",
               "exp_avg_sq": "exp_avg_sq"}


def assert_state_close(opt, topt, theirs):
    for i, t in enumerate(theirs):
        tstate = topt.state.get(t, {})
        ours = opt.state.get(i, {})
        for key, value in tstate.items():
            if key == "step":
                assert ours["step"] == int(value.item())
            elif value is not None:
                expected = value.numpy()
                np.testing.assert_allclose(ours[key], expected, rtol=0,
                                           atol=RTOL * max(np.abs(expected).max(), 1e-300),
                                           err_msg=f"state {i}.{key}")
        # our state has nothing torch lacks (e.g. a buffer for a never-updated param)
        assert set(ours) <= set(tstate) | {"step"}


def run_both(np_cls, torch_cls, kwargs, steps=5, seed=0, skip_at=None):
    ours, theirs = make_params(seed)
    opt, topt = np_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    for step in range(steps):
        skip = (1,) if step == skip_at else ()
        set_grads(ours, theirs, grads_for_step(seed, step), skip)
        opt.step()
        topt.step()
        assert_close(ours, theirs)
        assert_state_close(opt, topt, theirs)
    return opt, ours


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------
SGD_CASES = [
    dict(lr=0.1, momentum=m, dampening=d, nesterov=n, weight_decay=wd)
    for m, d, n, wd in itertools.product([0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 0.05])
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_sgd_matches_torch(kwargs):
    # skip_at=2: parameter 1 has no gradient at step 2 and must be left alone,
    # its momentum buffer included.
    run_both(SGD, torch.optim.SGD, kwargs, skip_at=2)


def test_sgd_first_step_is_undampened():
    # Step 1 sets buf = g (no (1 - dampening) factor): p1 = p0 - lr * g.
    p = Param(np.array([1.0]))
    opt = SGD([p], lr=0.5, momentum=0.9, dampening=0.5)
    p.grad = np.array([2.0])
    opt.step()
    assert p.data[0] == 1.0 - 0.5 * 2.0
    # Step 2: buf = 0.9*2 + 0.5*4 = 3.8
    p.grad = np.array([4.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.0 - 0.5 * 3.8], rtol=1e-15)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-0.1), "'lr' must be >= 0"),
    (dict(lr=0.1, momentum=-1), "'momentum' must be >= 0"),
    (dict(lr=0.1, weight_decay=-1), "'weight_decay' must be >= 0"),
    (dict(lr=0.1, nesterov=True), "nesterov=True requires momentum > 0"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening == 0"),
])
def test_sgd_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([Param(np.zeros(2))], **kwargs)
    with pytest.raises(ValueError):  # torch rejects the same combinations
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], **kwargs)


# ---------------------------------------------------------------------------
# Adam / AdamW
# ---------------------------------------------------------------------------
ADAM_CASES = [
    dict(),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.02, betas=(0.6, 0.9), weight_decay=0.01),  # 1 - beta1 = 0.4 < 0.5 branch
    dict(lr=0.02, betas=(0.3, 0.9)),                     # 1 - beta1 = 0.7 >= 0.5 lerp branch
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_matches_torch(kwargs):
    run_both(Adam, torch.optim.Adam, kwargs, skip_at=3)


ADAMW_CASES = [dict(), dict(lr=0.01, weight_decay=0.1), dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.0),
               dict(lr=0.02, betas=(0.3, 0.9), eps=1e-5, weight_decay=0.5)]


@pytest.mark.parametrize("kwargs", ADAMW_CASES, ids=str)
def test_adamw_matches_torch(kwargs):
    run_both(AdamW, torch.optim.AdamW, kwargs, skip_at=1)


def test_adamw_default_weight_decay_is_decoupled():
    # With a zero gradient, m = v = 0 so only the decay moves p:
    # p <- p * (1 - lr * 0.01) (the default weight_decay), and the Adam step adds 0.
    p = Param(np.array([2.0, -4.0]))
    opt = AdamW([p], lr=0.1)
    assert opt.param_groups[0]["weight_decay"] == 1e-2
    p.grad = np.zeros(2)
    opt.step()
    np.testing.assert_array_equal(p.data, np.array([2.0, -4.0]) * (1 - 0.1 * 0.01))


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "'lr' must be >= 0"),
    (dict(betas=(1.0, 0.9)), r"'betas\[0\]' must be in \[0, 1\)"),
    (dict(betas=(0.9, -0.1)), r"'betas\[1\]' must be in \[0, 1\)"),
    (dict(betas=0.9), "'betas' must be a pair"),
    (dict(eps=-1e-8), "'eps' must be >= 0"),
    (dict(weight_decay=-1), "'weight_decay' must be >= 0"),
])
def test_adam_bad_arguments(kwargs, match):
    for cls in (Adam, AdamW):
        with pytest.raises(ValueError, match=match):
            cls([Param(np.zeros(2))], **kwargs)


# ---------------------------------------------------------------------------
# behaviour shared by all optimizers
# ---------------------------------------------------------------------------
ALL = [(SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
       (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.5, dampening=0.2)),
       (Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
       (AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1))]
ALL_IDS = ["sgd-nesterov", "sgd-dampening", "adam", "adamw"]


@pytest.mark.parametrize("np_cls, torch_cls, kwargs", ALL, ids=ALL_IDS)
def test_param_groups_match_torch(np_cls, torch_cls, kwargs):
    # Two groups, the second overriding lr (and, for SGD/Adam, weight_decay).
    ours, theirs = make_params(7)
    override = dict(lr=kwargs["lr"] * 3, weight_decay=0.2)
    opt = np_cls([{"params": ours[:2]}, {"params": ours[2:], **override}], **kwargs)
    topt = torch_cls([{"params": theirs[:2]}, {"params": theirs[2:], **override}], **kwargs)
    for step in range(5):
        set_grads(ours, theirs, grads_for_step(7, step))
        opt.step()
        topt.step()
        assert_close(ours, theirs)
    assert opt.param_groups[1]["lr"] == override["lr"]


@pytest.mark.parametrize("np_cls, torch_cls, kwargs", ALL, ids=ALL_IDS)
def test_float32_stays_float32_and_close_to_torch(np_cls, torch_cls, kwargs):
    ours, theirs = make_params(3, dtype=np.float32)
    opt, topt = np_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    buffers = [p.data for p in ours]
    for step in range(5):
        set_grads(ours, theirs, grads_for_step(3, step, dtype=np.float32))
        opt.step()
        topt.step()
    for p, buffer in zip(ours, buffers):
        assert p.data.dtype == np.float32
        assert p.data is buffer  # updated in place: the owning layer sees the change
    for state in opt.state.values():
        for key, value in state.items():
            if key != "step":
                assert value.dtype == np.float32
    # float32: same operations, FMA and rounding may differ per op; after 5
    # steps of ~10 ops allow 1e-5 of the value scale (~100 float32 ulps).
    assert_close(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("np_cls, torch_cls, kwargs", ALL, ids=ALL_IDS)
def test_state_dict_round_trip_through_npz(np_cls, torch_cls, kwargs):
    """Stop after 3 steps, save to .npz (no pickle), reload into a fresh optimizer
    over copies of the parameters, continue 2 steps: bit-identical to a run
    that never stopped."""
    ours, _ = make_params(11)
    opt = np_cls(ours, **kwargs)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    for step in range(3):
        for p, g in zip(ours, grads_for_step(11, step)):
            p.grad = g
        opt.step()
        sched.step()

    buffer = io.BytesIO()
    np.savez(buffer, **{f"opt/{k}": v for k, v in opt.state_dict().items()},
             **{f"sched/{k}": v for k, v in sched.state_dict().items()})
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        loaded = {k: archive[k] for k in archive.files}
    resumed_params = [Param(p.data.copy()) for p in ours]
    resumed = np_cls(resumed_params, lr=123.0)  # hyperparameters must come from the file
    resumed_sched = StepLR(resumed, step_size=99, gamma=0.9)
    resumed.load_state_dict({k[4:]: v for k, v in loaded.items() if k.startswith("opt/")})
    resumed_sched.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("sched/")})
    assert resumed.param_groups[0]["lr"] == opt.param_groups[0]["lr"]

    for step in range(3, 5):
        for p, q, g in zip(ours, resumed_params, grads_for_step(11, step)):
            p.grad, q.grad = g, g.copy()
        opt.step()
        resumed.step()
        sched.step()
        resumed_sched.step()
    for p, q in zip(ours, resumed_params):
        np.testing.assert_array_equal(q.data, p.data)
    assert resumed_sched.get_last_lr() == sched.get_last_lr()
    # the state dict is all plain arrays (storable without pickle)
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in opt.state_dict().values())


def test_state_dict_is_a_copy():
    p = Param(np.ones(3))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    sd["state.0.momentum_buffer"][...] = 100.0
    assert opt.state[0]["momentum_buffer"][0] == 1.0


def test_state_dict_keys():
    ours, _ = make_params(0)
    opt = Adam(ours, lr=0.1)
    for p, g in zip(ours, grads_for_step(0, 0)):
        p.grad = g
    opt.step()
    keys = set(opt.state_dict())
    assert {"param_groups.0.params", "param_groups.0.lr", "param_groups.0.betas",
            "param_groups.0.eps", "param_groups.0.weight_decay"} <= keys
    for i in range(len(ours)):
        assert {f"state.{i}.step", f"state.{i}.exp_avg", f"state.{i}.exp_avg_sq"} <= keys
    np.testing.assert_array_equal(opt.state_dict()["param_groups.0.params"], [0, 1, 2])


def _sgd_with_state():
    p = Param(np.ones((2, 3)))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones((2, 3))
    opt.step()
    return opt


@pytest.mark.parametrize("mutate, match", [
    (lambda sd: sd.pop("param_groups.0.lr"), "missing key 'param_groups.0.lr'"),
    (lambda sd: sd.update({"param_groups.0.bogus": np.array(1.0)}),
     "unexpected key 'param_groups.0.bogus'"),
    (lambda sd: sd.update({"state.0.momentum_buffer": np.ones(6)}),
     r"'state.0.momentum_buffer' has shape \(6,\), expected \(2, 3\)"),
    (lambda sd: sd.update({"state.5.momentum_buffer": np.ones((2, 3))}), "unexpected key 'state.5"),
    (lambda sd: sd.update({"state.0.exp_avg": np.ones((2, 3))}), "unexpected key 'state.0.exp_avg'"),
    (lambda sd: sd.update({"param_groups.0.params": np.array([0, 1])}), "must list parameter indices"),
])
def test_load_state_dict_errors_name_the_key(mutate, match):
    opt = _sgd_with_state()
    before = opt.state_dict()
    sd = opt.state_dict()
    mutate(sd)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    # a failed load changes nothing
    after = opt.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_zero_grad():
    ours, _ = make_params(0)
    opt = SGD(ours, lr=0.1)
    for p, g in zip(ours, grads_for_step(0, 0)):
        p.grad = g
    opt.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in ours)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
    opt.step()  # no gradients: nothing moves, no state created
    assert opt.state == {}


def test_constructor_errors():
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="'.data' ndarray"):
        SGD([np.zeros(3)], lr=0.1)
    class FakeModel:  # a model instead of its parameters gets a hint
        def parameters(self):
            return []

        def __iter__(self):
            return iter([self])

    with pytest.raises(TypeError, match=r"pass model.parameters\(\), not the model"):
        SGD(FakeModel(), lr=0.1)
    with pytest.raises(TypeError, match="float dtype"):
        SGD([Param(np.zeros(3, dtype=np.int64))], lr=0.1)
    p = Param(np.zeros(3))
    with pytest.raises(ValueError, match="more than once"):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        SGD([{"params": [p], "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(TypeError, match="'lr' must be a real number"):
        SGD([p], lr="0.1")
    for opt in (SGD([p], lr=0.1), Adam([p])):
        p.grad = np.zeros((1, 3))  # would broadcast
        with pytest.raises(ValueError, match=r"parameter 0 has shape \(3,\) but its '.grad' has shape \(1, 3\)"):
            opt.step()


# ---------------------------------------------------------------------------
# learning-rate schedules
# ---------------------------------------------------------------------------
SCHEDULES = [
    (StepLR, dict(step_size=3, gamma=0.5)),
    (StepLR, dict(step_size=1, gamma=0.9)),
    (CosineAnnealingLR, dict(T_max=7)),
    (CosineAnnealingLR, dict(T_max=4, eta_min=0.01)),
]


@pytest.mark.parametrize("cls, kwargs", SCHEDULES, ids=str)
def test_schedule_matches_torch_exactly(cls, kwargs):
    # Same recursive formulas in Python floats as torch's get_lr(): exact equality.
    ours, theirs = make_params(0)
    opt = SGD([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.3}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.3}],
                           lr=0.1, momentum=0.9)
    sched = cls(opt, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, cls.__name__)(topt, **kwargs)
    for epoch in range(20):  # past T_max: the cosine rises again, as in torch
        assert sched.get_last_lr() == tsched.get_last_lr(), f"epoch {epoch}"
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
        topt.step()  # keeps torch from warning about the call order
        sched.step()
        tsched.step()


def test_cosine_values():
    # Closed form at a few epochs (exact arithmetic equals the recursion; 1e-15).
    opt = SGD([Param(np.zeros(1))], lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.2)
    lrs = []
    for _ in range(5):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    expected = [0.2 + 0.8 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(5)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-15, atol=1e-15)


def test_scheduler_errors():
    opt = SGD([Param(np.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="'step_size' must be an integer >= 1"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="'T_max' must be an integer >= 1"):
        CosineAnnealingLR(opt, T_max=2.5)
    with pytest.raises(TypeError, match="'optimizer'"):
        StepLR(object(), step_size=1)
    sched = StepLR(opt, step_size=2)
    sd = sched.state_dict()
    sd.pop("gamma")
    with pytest.raises(ValueError, match="missing key 'gamma'"):
        sched.load_state_dict(sd)
