"""Feature taps (hooks by dotted module name), registry errors and the teacher ensemble."""

from __future__ import annotations

import pytest
import torch

from relkd_bench.models import (
    FeatureTap,
    SegModel,
    TeacherEnsemble,
    build_model,
    list_models,
    register_model,
)


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*enet.*erfnet.*espnet.*unet_wide"):
        build_model("resnet50")


def test_duplicate_and_bad_role_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_model("enet", role="student")(lambda: None)
    with pytest.raises(ValueError, match="role"):
        register_model("x", role="mentor")


def test_unknown_tap_errors():
    model = build_model("enet").eval()
    with pytest.raises(ValueError, match="declares no tap 'nope'.*encoder"):
        model.feature_channels("nope")
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        model.forward_features(torch.randn(1, 1, 64, 64), taps=["nope"])
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed after the error


def test_dotted_module_taps_and_hook_cleanup():
    model = build_model("erfnet").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        logits, feats = model.forward_features(x, taps=["encoder", "stage1.0", "down1"])
        plain = model(x)
    assert torch.equal(logits, plain)
    assert feats["stage1.0"].shape == (1, 64, 16, 16)
    assert feats["down1"].shape == (1, 16, 32, 32)
    assert not any(m._forward_hooks for m in model.modules())


def test_feature_tap_context_manager_on_teacher():
    model = build_model("unet_wide").eval()
    with torch.no_grad(), FeatureTap(model, {"enc": model.taps["encoder"].module}) as tap:
        model(torch.randn(1, 1, 64, 64))
    assert tap.features["enc"].shape == model.feature_shape("encoder", 64, 64)
    assert not any(m._forward_hooks for m in model.modules())


def test_ensemble_logits_are_mean_of_members():
    torch.manual_seed(0)
    ens = build_model("teacher_ensemble", num_members=3).eval()
    assert isinstance(ens, TeacherEnsemble) and len(ens.members) == 3
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits, feats = ens.forward_features(x)
        outs = [m.forward_features(x) for m in ens.members]
        plain = ens(x)
    expected = torch.stack([o[0] for o in outs]).mean(0)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-6)
    assert tuple(feats) == ens.default_taps == ("encoder", "decoder")
    for tap in feats:
        torch.testing.assert_close(feats[tap], torch.stack([o[1][tap] for o in outs]).mean(0))
        assert tuple(feats[tap].shape) == ens.feature_shape(tap, 64, 64, batch=2)


def test_ensemble_heterogeneous_members():
    with pytest.raises(ValueError, match="reduce='members'"):
        build_model("teacher_ensemble", members=("unet_wide", "segresnet"))
    ens = build_model("teacher_ensemble", members=("segresnet", "unet_wide"), reduce="members").eval()
    assert ens.size_multiple == 16
    with torch.no_grad():
        logits, feats = ens.forward_features(torch.randn(1, 1, 64, 64))
    assert logits.shape == (1, 2, 64, 64)
    assert set(feats) == {"member0/encoder", "member0/decoder", "member1/encoder", "member1/decoder"}
    for tap, f in feats.items():
        assert tuple(f.shape) == ens.feature_shape(tap, 64, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        ens(torch.randn(1, 1, 72, 72))


def test_ensemble_member_mismatch_rejected():
    a, b = build_model("enet"), build_model("enet", num_classes=3)
    with pytest.raises(ValueError, match="same in_channels and num_classes"):
        TeacherEnsemble([a, b])
    with pytest.raises(TypeError):
        TeacherEnsemble([torch.nn.Conv2d(1, 2, 1)])


def test_every_registered_model_is_a_segmodel():
    for name in list_models():
        if name == "teacher_ensemble":
            continue
        assert isinstance(build_model(name), SegModel)
