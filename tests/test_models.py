"""Shapes, size checks, gradients and parameter counts of the teachers and students."""

from __future__ import annotations

import pytest
import torch

from relkd_bench.models import SegModel, build_model, list_models

STUDENTS = ("enet", "erfnet", "espnet")
TEACHERS = ("unet_wide", "segresnet", "dynunet")
ALL = STUDENTS + TEACHERS


@pytest.fixture(scope="module")
def models() -> dict[str, SegModel]:
    torch.manual_seed(0)
    return {n: build_model(n).eval() for n in ALL}


def test_registry_lists_students_and_teachers():
    assert set(list_models("student")) == set(STUDENTS)
    assert set(ALL) | {"teacher_ensemble"} == set(list_models())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("hw", [(96, 96), (128, 128), (96, 128)])
def test_shapes_and_all_declared_taps(models, name, hw):
    model = models[name]
    x = torch.randn(2, 1, *hw)
    with torch.no_grad():
        logits, feats = model.forward_features(x, taps=list(model.taps))
    assert logits.shape == (2, 2, *hw)
    assert set(feats) == set(model.taps)
    for tap, f in feats.items():
        assert tuple(f.shape) == model.feature_shape(tap, *hw, batch=2), tap
        assert f.shape[1] == model.feature_channels(tap)
        assert f.shape[-1] * model.feature_stride(tap) == hw[1]


@pytest.mark.parametrize("name", ALL)
def test_384_forward(models, name):
    model = models[name]
    with torch.no_grad():
        logits, feats = model.forward_features(torch.randn(1, 1, 384, 384))
    assert logits.shape == (1, 2, 384, 384)
    assert tuple(feats) == model.default_taps
    for tap, f in feats.items():
        assert tuple(f.shape) == model.feature_shape(tap, 384, 384)


@pytest.mark.parametrize("name", ALL)
def test_default_taps_declared(models, name):
    model = models[name]
    assert len(model.default_taps) >= 2
    for tap in model.default_taps:
        assert model.feature_channels(tap) > 0 and model.feature_stride(tap) in (2, 4, 8, 16)


@pytest.mark.parametrize("name", ALL)
def test_odd_size_rejected_clearly(models, name):
    with pytest.raises(
        ValueError, match=rf"{type(models[name]).__name__}.*multiples of {models[name].size_multiple}"
    ):
        models[name](torch.randn(1, 1, 97, 96))


@pytest.mark.parametrize(("name", "ok"), [(n, True) for n in (*STUDENTS, "segresnet")] + [
    ("unet_wide", False), ("dynunet", False)])  # fmt: skip
def test_multiple_of_8_not_16(models, name, ok):
    x = torch.randn(1, 1, 104, 104)
    if ok:
        with torch.no_grad():
            assert models[name](x).shape == (1, 2, 104, 104)
    else:
        with pytest.raises(ValueError, match="multiples of 16"):
            models[name](x)


@pytest.mark.parametrize("name", ALL)
def test_wrong_channels_rejected(models, name):
    with pytest.raises(ValueError, match=r"expects input \[B, 1, H, W\]"):
        models[name](torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("name", STUDENTS)
def test_students_25d_input(name):
    model = build_model(name, in_channels=3, num_classes=3).eval()
    with torch.no_grad():
        logits, feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 3, 64, 64)
    for tap, f in feats.items():
        assert tuple(f.shape) == model.feature_shape(tap, 64, 64)


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    logits, feats = model.forward_features(torch.randn(2, 1, 64, 64))
    assert all(f.requires_grad for f in feats.values())
    (logits.square().mean() + sum(f.square().mean() for f in feats.values())).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    nonzero = sum(bool(p.grad.abs().sum() > 0) for p in model.parameters())
    assert nonzero >= 0.9 * len(list(model.parameters()))


# -- parameter counts against the published architectures (within 3 %) ---------------------------
PUBLISHED = {
    # name: (kwargs, published count, source)
    "enet": ({}, 370_000, "Paszke et al. 2016: 0.37 M"),
    "erfnet": ({}, 2_060_000, "Romera et al., erfnet_pytorch: 2.06 M"),
    "espnet": ({"in_channels": 3, "num_classes": 20}, 364_000, "Mehta et al. 2018: 0.364 M (20 classes)"),
}


def _nparams(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", STUDENTS)
def test_param_count_matches_published(name):
    kwargs, published, source = PUBLISHED[name]
    n = _nparams(build_model(name, **kwargs))
    assert abs(n / published - 1) < 0.03, (name, n, source)


def test_published_configs_also_match_at_rgb_20_classes():
    for name, published in (("enet", 370_000), ("erfnet", 2_060_000)):
        assert abs(_nparams(build_model(name, in_channels=3, num_classes=20)) / published - 1) < 0.03


def test_enet_near_paper_student():
    # RelKD paper's student: about 353k parameters.
    assert abs(_nparams(build_model("enet")) / 353_000 - 1) < 0.03


def test_espnet_default_differs_only_in_class_dependent_decoder():
    # ESPNet's decoder works in class space: fewer classes, fewer parameters (documented, -5 %).
    n2, n20 = _nparams(build_model("espnet")), _nparams(build_model("espnet", in_channels=3, num_classes=20))
    assert 0.93 < n2 / n20 < 0.97


@pytest.mark.parametrize("name", TEACHERS)
def test_teachers_are_heavy(name):
    assert _nparams(build_model(name)) > 5_000_000
