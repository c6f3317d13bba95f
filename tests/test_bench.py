"""The benchmark's own logic (modes, rooflines, ratios, the training-step rows) on tiny inputs; the
speed figures themselves are never asserted."""

import pytest
import torch

from relkd_bench import bench
from relkd_bench.bench_step import BASELINE, VARIANTS, step_rows

CPU = torch.device("cpu")


def test_distill_mode_differentiates_the_student_only():
    case = bench.Case("kd_logits_loss", "tiny", bench._features(2, 3, 3, 4, 5), ("native",))
    grads = bench.make_runner(case, "native", "distill", CPU)()
    assert len(grads) == 1 and grads[0].shape == (2, 3, 4, 5)
    assert len(bench.make_runner(case, "native", "fwd+bwd", CPU)()) == 2


def test_copy_roofline_moves_the_modes_bytes():
    case = bench.Case("kd_logits_loss", "tiny", bench._features(2, 3, 3, 4, 5), ("copy",), memory_bound=True)
    for mode, passes in bench.TENSOR_PASSES_PER_MODE.items():
        out = bench.make_runner(case, "copy", mode, CPU)()
        assert 2 * out.numel() == passes * 2 * 3 * 4 * 5  # read + write = passes over one input


def test_ratios_against_reference_roofline_and_fwd_bwd():
    def row(mode, provider, ms, mb=1.0):
        return {"mode": mode, "provider": provider, "median_ms": ms, "peak_extra_mb": mb}

    rows = [row("fwd+bwd", "native", 10.0), row("fwd+bwd", "reference", 40.0, 4.0),
            row("fwd+bwd", "copy", 5.0), row("distill", "native", 6.0), row("distill", "copy", 4.0)]
    bench._ratios(rows)
    assert rows[0]["speedup_vs_eager"] == 4.0 and rows[0]["memory_vs_eager"] == 4.0
    assert rows[0]["roofline_fraction"] == 0.5
    assert rows[3]["vs_fwd_bwd"] == pytest.approx(0.6)
    assert rows[3]["roofline_fraction"] == pytest.approx(4 / 6)
    assert "roofline_fraction" not in rows[2]


def test_gram_flops_per_mode():
    case = bench.Case("gram_loss", "t", bench._features(1, 2, 2, 2, 2), ("gemm",), gemm_flops=10.0)
    assert [case.flops(m) for m in bench.MODES] == [20.0, 40.0, 30.0]


def test_step_rows_report_overhead_over_no_kd():
    small = {"data.size": 32, "train.batch_size": 2}
    variants = {k: VARIANTS[k] for k in (BASELINE, "KM", "AA relation_kl pool=2")}
    rows = step_rows("quick", CPU, repeats=1, variants=variants, base=small)
    assert [r["provider"] for r in rows] == ["step", "teacher_fwd", "step", "step"]
    steps = {r["mode"]: r for r in rows if r["provider"] == "step"}
    assert set(steps) == set(variants) and steps[BASELINE]["overhead_vs_no_kd"] == 0.0
    assert all(r["median_ms"] > 0 and "B=2 1x32x32" in r["shape"] for r in rows)
