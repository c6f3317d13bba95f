"""Loss registry and the RelKD objective."""

from __future__ import annotations

import pytest
import torch

from relkd_bench import ops
from relkd_bench.config import load_config
from relkd_bench.losses import (
    AffinityLoss,
    RelKDLoss,
    aam_pool,
    align_pair,
    build_loss,
    default_pairs,
    downsample_labels,
    list_losses,
)
from relkd_bench.models import build_model


def _models():
    torch.manual_seed(0)
    student = build_model("enet")
    teacher = build_model("unet_wide", channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)
    return student, teacher


def test_registry_names():
    assert {"dice_ce", "kd_logits", "kmm", "aam_cosine", "aam_class_aware", "aam_relation_kl",
            "relkd"} <= set(list_losses())
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("nope")


def test_align_and_labels():
    fs, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 16, 16)
    a, b = align_pair(fs, ft, "resize_teacher")
    assert a.shape == (2, 4, 8, 8) and b.shape == (2, 6, 8, 8)
    a, b = align_pair(fs, ft, "resize_student")
    assert a.shape == (2, 4, 16, 16) and b.shape == ft.shape
    a, b = align_pair(fs, ft, "pool")
    assert a.shape[-2:] == b.shape[-2:] == (8, 8)
    y = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    y[:, :, :8] = 1
    d = downsample_labels(y, (4, 4), 2)
    assert d.shape == (2, 4, 4) and d[:, :2].eq(1).all() and d[:, 2:].eq(0).all()


def test_kmm_adapter_and_gradients():
    km = build_loss("kmm", student_channels=4, teacher_channels=6)
    fs = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = km(fs, torch.randn(2, 6, 4, 4))
    loss.backward()
    assert loss.item() > 0 and fs.grad is not None and km.adapter.weight.grad is not None
    assert isinstance(build_loss("kmm", student_channels=6, teacher_channels=6).adapter, torch.nn.Identity)


def test_aam_variants():
    fs, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 16, 16)
    y = torch.randint(0, 2, (2, 1, 32, 32))
    cos = AffinityLoss("cosine")(fs, ft)
    ca = AffinityLoss("class_aware", pool=2)(fs, ft, y)
    assert cos.item() > 0 and ca.item() > 0
    # class-aware with equal weights on pooled features vs the op directly
    fa, ta = align_pair(fs, ft, "resize_teacher")
    ref = ops.affinity_loss_reference(fa, ta)
    torch.testing.assert_close(cos, ref, rtol=1e-4, atol=1e-6)


def test_relkd_zero_lambdas_build_nothing():
    student, _ = _models()
    cfg = load_config("quick", {"distill.lambda_logits": 0, "distill.lambda_km": 0, "distill.lambda_aa": 0})
    loss = RelKDLoss(cfg.distill, student, None, "enet")
    assert not loss.needs_teacher and loss.logits is None and len(loss.km) == 0 and len(loss.aa) == 0
    assert loss.student_taps == () and loss.teacher_taps == ()
    zs = torch.randn(2, 2, 32, 32, requires_grad=True)
    total, parts = loss(zs, torch.randint(0, 2, (2, 1, 32, 32)))
    assert set(parts) == {"seg"}
    total.backward()


@pytest.mark.parametrize("labels", ["gt", "teacher"])
def test_relkd_full_objective(labels):
    student, teacher = _models()
    cfg = load_config("quick", {"distill.aa_labels": labels})
    loss = RelKDLoss(cfg.distill, student, teacher, "enet")
    assert loss.km_pairs == default_pairs("enet", "km") and loss.aa_pairs == (("decoder", "decoder"),)
    x = torch.randn(2, 1, 32, 32)
    y = torch.randint(0, 2, (2, 1, 32, 32))
    zs, fs = student.forward_features(x, loss.student_taps)
    with torch.no_grad():
        zt, ft = teacher.forward_features(x, loss.teacher_taps)
    total, parts = loss(zs, y, fs, zt, ft)
    assert set(parts) == {"seg", "logits", "km", "aa"}
    d = cfg.distill
    expected = (parts["seg"] + d.lambda_logits * parts["logits"] + d.lambda_km * parts["km"]
                + d.lambda_aa * parts["aa"])
    assert abs(total.item() - expected) < 1e-4 * max(1.0, abs(expected))
    total.backward()
    assert all(p.grad is not None for p in loss.km.parameters())


def test_espnet_default_pairs():
    assert default_pairs("espnet", "aa") == (("level2", "decoder"),)
    with pytest.raises(ValueError):
        default_pairs("enet", "xx")


def test_relation_kl_variant_calls_the_op():
    fs, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 16, 16)
    got = AffinityLoss("relation_kl", pool=2, temperature=0.5)(fs, ft)
    a, b = align_pair(fs, ft, "resize_teacher")
    torch.testing.assert_close(got, ops.relation_kl_loss(a, b, temperature=0.5, pool=2))


@pytest.mark.parametrize("pool", [2, 3])
def test_one_pooling_rule_for_every_aam_variant(pool):
    """Odd H, W (7×9, not multiples of pool): every variant works on the same ceil-mode grid."""
    torch.manual_seed(0)
    fs, ft = torch.randn(2, 4, 7, 9, dtype=torch.float64), torch.randn(2, 6, 7, 9, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 1, 7, 9))
    ps, pt = aam_pool(fs, pool), aam_pool(ft, pool)
    assert ps.shape[-2:] == (-(-7 // pool), -(-9 // pool))
    # a partial edge window averages the pixels it covers
    h0, w0 = (ps.shape[-2] - 1) * pool, (ps.shape[-1] - 1) * pool
    torch.testing.assert_close(ps[..., -1, -1], fs[..., h0:, w0:].mean((-2, -1)))
    torch.testing.assert_close(AffinityLoss("cosine", pool=pool)(fs, ft).double(),
                               ops.affinity_loss_reference(ps.float(), pt.float()).double(),
                               rtol=1e-4, atol=1e-7)
    yp = downsample_labels(y, (7, 9), 2, pool)
    assert yp.shape[-2:] == ps.shape[-2:]
    torch.testing.assert_close(AffinityLoss("class_aware", pool=pool)(fs, ft, y).double(),
                               ops.affinity_loss_reference(ps.float(), pt.float(), yp).double(),
                               rtol=1e-4, atol=1e-7)
    # the op pools inside, on the same grid as aam_pool
    torch.testing.assert_close(AffinityLoss("relation_kl", pool=pool)(fs, ft).double(),
                               ops.relation_kl_loss(ps.float(), pt.float()).double(),
                               rtol=1e-4, atol=1e-7)
