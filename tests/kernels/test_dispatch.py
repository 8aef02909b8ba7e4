"""Backend choice (argument, environment variable, "auto"), the one-time slow-path warning, and
the errors for bad input, of `selective_scan` and `selective_state_update`."""

import importlib
import re
import warnings

import pytest
import torch

from mamba_bio_audio.kernels import dispatch, selective_scan, selective_state_update
from mamba_bio_audio.kernels.dispatch import ENV_VAR, LazyKernel, SlowPathWarning, choose_backend

scan_pkg = importlib.import_module("mamba_bio_audio.kernels.selective_scan")
update_pkg = importlib.import_module("mamba_bio_audio.kernels.state_update")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No environment override and no warning issued yet, in every test."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "_warned", set())


def scan_inputs(batch=2, dim=4, L=6, N=3, groups=0):
    g = torch.Generator().manual_seed(0)
    bc = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    return dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g),
                A=-torch.rand(dim, N, generator=g), B=torch.randn(*bc, generator=g),
                C=torch.randn(*bc, generator=g))


def update_inputs(batch=2, dim=4, N=3):
    g = torch.Generator().manual_seed(0)
    return dict(state=torch.zeros(batch, dim, N), x=torch.randn(batch, dim, generator=g),
                dt=torch.rand(batch, dim, generator=g), A=-torch.rand(dim, N, generator=g),
                B=torch.randn(batch, N, generator=g), C=torch.randn(batch, N, generator=g))


@pytest.fixture
def spies(monkeypatch):
    """Record which implementation `selective_scan` calls."""
    calls = []
    for name in ("selective_scan_torch", "selective_scan_ref"):
        real = getattr(scan_pkg, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(scan_pkg, name, spy)
    return calls


def test_auto_on_cpu_uses_torch_path_and_warns_once(spies):
    x = scan_inputs()
    with pytest.warns(SlowPathWarning, match="PyTorch path"):
        y = selective_scan(**x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selective_scan(**x)  # no second warning
    assert spies == ["selective_scan_torch"] * 2
    torch.testing.assert_close(y, selective_scan(**x, backend="reference"))


def test_environment_variable_forces_a_backend(spies, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "reference")
    selective_scan(**scan_inputs())
    selective_scan(**scan_inputs(), backend="torch")  # an explicit argument wins
    assert spies == ["selective_scan_ref", "selective_scan_torch"]


def test_bad_environment_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cuda-please")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='cuda-please'.*auto, triton, torch, reference"):
        selective_scan(**scan_inputs())


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of.*got 'jax'"):
        selective_scan(**scan_inputs(), backend="jax")


def test_cuda_tensors_pick_triton_or_warn_and_fall_back():
    cuda = torch.device("cuda")
    have = LazyKernel("math", "sqrt")
    missing = LazyKernel("mamba_bio_audio.kernels.no_such_module", "scan")
    assert choose_backend("auto", cuda, "op", "torch", have) == "triton"
    with pytest.warns(SlowPathWarning, match="Triton is not available"):
        assert choose_backend("auto", cuda, "op", "torch", missing) == "torch"
    assert choose_backend("reference", cuda, "op", "torch", have) == "reference"


def test_missing_triton_module_says_what_to_install():
    missing = LazyKernel("mamba_bio_audio.kernels.no_such_module", "scan")
    assert not missing.available()
    with pytest.raises(ImportError, match="triton"):
        missing.require()


def test_state_update_dispatch(monkeypatch):
    x = update_inputs()
    want = update_pkg.selective_state_update_ref(**{**x, "state": x["state"].clone()})
    with pytest.warns(SlowPathWarning):
        y = selective_state_update(**x)
    torch.testing.assert_close(y, want)
    monkeypatch.setenv(ENV_VAR, "torch")  # the same as the reference for one step
    torch.testing.assert_close(selective_state_update(**{**x, "state": torch.zeros(2, 4, 3)}), want)


BAD_SCAN = [
    ("u", lambda x: x["u"].long(), TypeError, "u must have a floating dtype.*got torch.int64"),
    ("u", lambda x: x["u"][0], ValueError, r"u must be 3-D, got shape \(4, 6\)"),
    ("u", lambda x: x["u"].numpy(), TypeError, "u must be a torch.Tensor, got ndarray"),
    ("delta", lambda x: x["delta"][..., :5], ValueError,
     r"delta must have shape \(batch, dim, L\) like u = \(2, 4, 6\), got \(2, 4, 5\)"),
    ("A", lambda x: x["A"][:3], ValueError, r"A must have shape \(dim, N\) with dim=4 .* got \(3, 3\)"),
    ("A", lambda x: -torch.rand(4, 300), ValueError, "N=300 .* supported: 1 to 256"),
    ("B", lambda x: x["B"][:1], ValueError, r"B must have shape \(batch, N, L\) = \(2, 3, 6\), got \(1, 3, 6\)"),
    ("B", lambda x: torch.randn(2, 3, 3, 6), ValueError, "B has G=3 groups .* must divide dim=4"),
    ("C", lambda x: x["C"].half(), None, None),  # another float dtype is fine
    ("C", lambda x: x["C"][:, :2], ValueError, r"C must have shape \(batch, N, L\) = \(2, 3, 6\)"),
    ("D", lambda x: torch.ones(5), ValueError, r"D must have shape \(dim,\) = \(4,\), got \(5,\)"),
    ("z", lambda x: x["u"].int(), TypeError, "z must have a floating dtype"),
    ("delta_bias", lambda x: torch.ones(4, 1), ValueError, r"delta_bias must be 1-D, got shape \(4, 1\)"),
    ("initial_state", lambda x: torch.zeros(2, 4, 5), ValueError,
     r"initial_state must have shape \(batch, dim, N\) = \(2, 4, 3\), got \(2, 4, 5\)"),
    ("seq_idx", lambda x: torch.zeros(2, 6), TypeError, "seq_idx must have an integer dtype.*float32"),
    ("seq_idx", lambda x: torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 0, 2, 2]]), ValueError,
     r"non-decreasing.*seq_idx\[1, 3\] = 0 < seq_idx\[1, 2\] = 1"),
    ("seq_idx", lambda x: torch.zeros(2, 5, dtype=torch.int32), ValueError,
     r"seq_idx must have shape \(batch, L\) = \(2, 6\)"),
]


@pytest.mark.parametrize("name, make, error, message", BAD_SCAN,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_SCAN)])
def test_bad_scan_input(name, make, error, message):
    x = scan_inputs()
    x[name] = make(x)
    if error is None:
        selective_scan(**x, backend="torch")
        return
    with pytest.raises(error, match=message):
        selective_scan(**x, backend="torch")


def test_empty_sequence():
    x = {k: (v[..., :0] if k in ("u", "delta", "B", "C") else v) for k, v in scan_inputs().items()}
    with pytest.raises(ValueError, match=r"u must have shape \(batch, dim, L\) with every size >= 1"):
        selective_scan(**x)


def test_tensors_on_different_devices():
    x = scan_inputs()
    x["D"] = torch.ones(4, device="meta")
    with pytest.raises(ValueError, match="one device: u is on cpu, D is on meta"):
        selective_scan(**x)


def test_grouped_scan_input_accepted():
    y = selective_scan(**scan_inputs(groups=2), backend="torch")
    assert y.shape == (2, 4, 6)


BAD_UPDATE = [
    ("state", lambda x: x["state"].half(), TypeError, "state must be float32 or float64"),
    ("x", lambda x: x["x"][:, :3], ValueError, r"x must have shape \(batch, dim\) like state = \(2, 4\)"),
    ("A", lambda x: x["A"][:, :2], ValueError, r"A must have shape \(dim, N\) like state = \(4, 3\)"),
    ("B", lambda x: torch.randn(2, 3, 3), ValueError, "B has G=3 groups .* must divide dim=4"),
    ("dt", lambda x: x["dt"].long(), TypeError, "dt must have a floating dtype"),
]


@pytest.mark.parametrize("name, make, error, message", BAD_UPDATE, ids=[b[0] for b in BAD_UPDATE])
def test_bad_state_update_input(name, make, error, message):
    x = update_inputs()
    x[name] = make(x)
    with pytest.raises(error, match=message):
        selective_state_update(**x, backend="reference")


def test_messages_name_the_argument():
    """Every scan error message starts with the name of the argument it is about."""
    for name, make, error, message in BAD_SCAN:
        if error is None:
            continue
        x = scan_inputs()
        x[name] = make(x)
        with pytest.raises(error) as info:
            selective_scan(**x, backend="torch")
        assert re.match(rf"{name}\b", str(info.value)), str(info.value)
