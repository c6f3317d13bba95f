"""The published segmentation-KD baselines (issue 13): SKD pair-wise, CIRKD in-image relations, CWD, and
the named methods of ``ablations/methods.yaml``."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relkd_bench import ops
from relkd_bench.ablate import load_spec, make_plan, spec_from_dict
from relkd_bench.ablate.spec import METHODS, canonical_method, method_overrides
from relkd_bench.config import load_config
from relkd_bench.losses import ChannelWiseKD, PairwiseSKD, RelKDLoss, build_loss, cwd_loss

ROOT = Path(__file__).resolve().parents[1]


# -- CWD ---------------------------------------------------------------------------------------
def _cwd_by_channel(ys: torch.Tensor, yt: torch.Tensor, tau: float) -> torch.Tensor:
    """Shu et al. 2021, Eq. 3–4, one channel at a time with ``F.kl_div``: τ²/(B·C) Σ_{b,c} KL."""
    b, c = ys.shape[:2]
    total = sum(F.kl_div(F.log_softmax(ys[i, k].flatten() / tau, 0), F.softmax(yt[i, k].flatten() / tau, 0),
                         reduction="sum") for i in range(b) for k in range(c))
    return tau**2 * total / (b * c)


@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0])
def test_cwd_matches_the_per_channel_formula(tau):
    torch.manual_seed(0)
    ys = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    yt = 2 * torch.randn(2, 3, 5, 7, dtype=torch.float64)
    got, want = cwd_loss(ys, yt, tau), _cwd_by_channel(ys, yt, tau)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, ys)[0], torch.autograd.grad(want, ys)[0])


def test_cwd_properties():
    torch.manual_seed(1)
    y = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    assert float(cwd_loss(y, y, 1.0)) == pytest.approx(0.0, abs=1e-12)
    shift = torch.randn(2, 2, 1, 1, dtype=torch.float64)  # a constant per channel map changes no softmax
    z = torch.randn_like(y)
    torch.testing.assert_close(cwd_loss(z + shift, y, 2.0), cwd_loss(z, y, 2.0))
    assert float(cwd_loss(z, y, 1.0)) > 0
    ys = z[:1, :, :3, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: cwd_loss(a, y[:1, :, :3, :3], 2.0), (ys,))
    with pytest.raises(ValueError, match="one shape"):
        cwd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


def test_cwd_module_detaches_the_teacher():
    ys = torch.randn(1, 2, 4, 4, requires_grad=True)
    yt = torch.randn(1, 2, 4, 4, requires_grad=True)
    ChannelWiseKD(1.0)(ys, yt).backward()
    assert ys.grad is not None and yt.grad is None


# -- SKD pair-wise -----------------------------------------------------------------------------
def _skd_by_definition(fs: torch.Tensor, ft: torch.Tensor, beta: int) -> torch.Tensor:
    """Liu et al. 2019, Eq. 2: max-pooled nodes, cosine affinities, 1/(N'²) Σ (a_s − a_t)², batch mean."""
    def affinity(f):
        x = F.max_pool2d(f, beta, stride=beta, ceil_mode=True).flatten(2)
        x = x / x.norm(dim=1, keepdim=True)
        return x.transpose(1, 2) @ x  # [B, N', N']

    return ((affinity(fs) - affinity(ft)) ** 2).mean()


@pytest.mark.parametrize("beta", [1, 2, 3])
def test_skd_matches_the_definition(beta):
    torch.manual_seed(2)
    fs = torch.randn(2, 5, 7, 9, dtype=torch.float64, requires_grad=True)  # odd sizes: partial windows
    ft = torch.randn(2, 3, 7, 9, dtype=torch.float64)  # Cs != Ct: no adapter needed
    got, want = PairwiseSKD(pool=beta)(fs, ft), _skd_by_definition(fs, ft, beta)  # the module: float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.autograd.grad(got, fs)[0], torch.autograd.grad(want, fs)[0],
                               rtol=1e-4, atol=1e-7)


def test_skd_nodes_are_max_pooled_not_averaged():
    torch.manual_seed(3)
    fs, ft = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    avg = ops.affinity_loss(F.avg_pool2d(fs, 2), F.avg_pool2d(ft, 2))
    assert float(PairwiseSKD(pool=2)(fs, ft)) != pytest.approx(float(avg), rel=1e-3)
    with pytest.raises(ValueError, match="equal H, W"):
        PairwiseSKD(align="none")


# -- RelKDLoss builds each method's term ---------------------------------------------------------
def _term(method: str) -> tuple[nn.Module, object]:
    cfg = load_config("quick", method_overrides(method, {"LM": 1.0, "KM": 0.05, "AA": 10.0})).distill
    return RelKDLoss(cfg, nn.Identity(), nn.Identity(), "enet"), cfg


def test_methods_build_their_terms():
    torch.manual_seed(4)
    fs, ft = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8)
    zs, zt = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    y = torch.randint(0, 2, (2, 1, 8, 8))
    obj, cfg = _term("SKD")
    assert isinstance(obj.aa[0], PairwiseSKD) and obj.logits is None and not len(obj.km)
    _, parts = obj(zs, y, {"decoder": fs}, zt, {"decoder": ft})
    assert parts["aa"] == pytest.approx(float(_skd_by_definition(fs, ft, 2)), rel=1e-5)
    obj, cfg = _term("CIRKD")  # the in-image pixel relations: the relation_kl op at τ = 0.1
    _, parts = obj(zs, y, {"decoder": fs}, zt, {"decoder": ft})
    want = ops.relation_kl_loss_reference(fs, ft, temperature=0.1)
    assert cfg.aa_variant == "relation_kl" and parts["aa"] == pytest.approx(float(want), rel=1e-4)
    obj, cfg = _term("CWD")
    assert isinstance(obj.logits, ChannelWiseKD) and cfg.lambda_logits == 3.0
    _, parts = obj(zs, y, None, zt, None)
    assert parts["logits"] == pytest.approx(float(cwd_loss(zs, zt, 1.0)), rel=1e-5)
    obj, cfg = _term("KD")  # Hinton's pixel mean at T = 1, as the segmentation baselines use it
    _, parts = obj(zs, y, None, zt, None)
    assert parts["logits"] == pytest.approx(float(ops.kd_logits_loss_reference(zs, zt, 1.0)), rel=1e-5)
    assert "cwd" in [n for n in ("cwd", "skd_pairwise", "aam_skd") if build_loss(n) is not None]


# -- the method axis of the ablation harness -----------------------------------------------------
def test_methods_yaml_parses_with_named_methods():
    spec = load_spec(ROOT / "ablations" / "methods.yaml")
    methods = spec.grid["method"]
    assert methods[0] == "no-KD"  # the baseline first
    assert set(methods) == {"teacher", "no-KD", "KD", "SKD", "CIRKD", "CWD", "RelKD"}
    assert len(spec.grid["seed"]) >= 3 and len(spec.cells()) == 7 * len(spec.grid["seed"])
    assert all(c["method"] == m for c, m in zip(spec.cells(), methods))  # method varies fastest


def _plan(spec, cell):
    trial = optuna.trial.FixedTrial(dict(cell))
    return make_plan(trial, spec)


def test_plans_of_named_methods_carry_their_labels_and_overrides():
    spec = load_spec(ROOT / "ablations" / "methods.yaml")
    plans = {c["method"]: _plan(spec, c) for c in spec.cells()[:7]}
    assert plans["no-KD"].baseline and not plans["teacher"].baseline
    for name, plan in plans.items():
        assert plan.method == name  # the table label is the method's name
        cfg = load_config(spec.base, plan.overrides).distill
        for key, value in METHODS[name].items():
            assert getattr(cfg, key.split(".", 1)[1]) == value
    relkd = load_config(spec.base, plans["RelKD"].overrides).distill
    assert (relkd.lambda_logits, relkd.lambda_km, relkd.lambda_aa) == (1.0, 0.05, 10.0)
    skd = load_config(spec.base, plans["SKD"].overrides).distill
    assert (skd.lambda_logits, skd.lambda_km) == (0.0, 0.0)


def test_method_axis_validation():
    assert canonical_method("skd") == "SKD" and canonical_method("km+lm") == "LM+KM"
    with pytest.raises(ValueError, match="unknown method"):
        canonical_method("FitNet")
    base = {"name": "t", "objective": "smoke"}
    with pytest.raises(ValueError, match="baseline"):
        spec_from_dict({**base, "grid": {"method": ["KD", "SKD"]}})
    with pytest.raises(ValueError, match="not both"):
        spec_from_dict({**base, "grid": {"method": ["no-KD"], "modules": ["none"]}})
    with pytest.raises(ValueError, match="unknown method"):
        spec_from_dict({**base, "grid": {"method": ["no-KD", "FitNet"]}})
    spec = spec_from_dict({**base, "grid": {"seed": [0], "method": ["CWD", "none", "LM+AA"]}})
    assert spec.grid["method"] == ["none", "CWD", "LM+AA"]


def test_a_spec_defines_its_own_methods():
    """``methods:`` names config overrides (e.g. tuned weights) usable on the method axis."""
    tuned = {"distill.lambda_logits": 0.5, "distill.lambda_km": 0.0, "distill.lambda_aa": 3.0}
    spec = spec_from_dict({"name": "t", "base": "quick", "methods": {"tuned": tuned},
                           "grid": {"seed": [0], "method": ["no-KD", "RelKD", "Tuned"]}})
    assert spec.grid["method"] == ["no-KD", "RelKD", "tuned"]
    plan = _plan(spec, spec.cells()[2])
    assert plan.method == "tuned" and not plan.baseline
    d = load_config(spec.base, plan.overrides).distill
    assert (d.lambda_logits, d.lambda_km, d.lambda_aa) == (0.5, 0.0, 3.0)
    base = {"name": "t", "base": "quick", "grid": {"method": ["no-KD", "x"]}}
    with pytest.raises(ValueError, match="built-in method"):
        spec_from_dict({**base, "methods": {"SKD": tuned}})
    with pytest.raises(ValueError, match="module set"):
        spec_from_dict({**base, "methods": {"LM+KM": tuned}})
    with pytest.raises(ValueError, match="unknown"):
        spec_from_dict({**base, "methods": {"x": {"distill.lambda_nope": 1.0}}})
    with pytest.raises(ValueError, match="method axis"):
        spec_from_dict({"name": "t", "base": "quick", "methods": {"x": tuned}, "grid": {"modules": ["none"]}})
