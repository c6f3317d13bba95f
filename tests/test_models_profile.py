"""The efficiency profile: FLOP convention, outputs and atomic writes."""

from __future__ import annotations

import csv

import torch

from relkd_bench import profile


def test_flops_are_two_macs():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    macs = 8 * 3 * 9 * 16 * 16
    assert profile.count_flops(conv, torch.randn(1, 3, 16, 16)) == 2 * macs


def test_main_writes_markdown_and_csv(tmp_path):
    rows = profile.main(
        [
            "--size",
            "64",
            "--models",
            "espnet",
            "enet",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert [r.model for r in rows] == ["espnet", "enet"]
    md = (tmp_path / "efficiency.md").read_text()
    assert "| enet | student |" in md and "torch" in md and "commit" in md
    with open(tmp_path / "efficiency.csv") as f:
        first, *lines = f.read().splitlines()
    assert first == "# models: the registry's default widths, input 64x64x1"
    table = list(csv.DictReader(lines))
    assert [r["model"] for r in table] == ["espnet", "enet"]
    assert int(table[1]["params"]) == sum(p.numel() for p in profile.build_model("enet").parameters())
    assert float(table[1]["size_mb"]) > 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_preset_profiles_the_models_as_the_preset_trains_them(tmp_path):
    """--preset real: its input size, and its slim teacher (teacher.kwargs), not the registry default."""
    from relkd_bench.config import load_config
    from relkd_bench.engine import build_role

    rows = profile.main(["--preset", "real", "--models", "enet", "unet_wide", "--runs", "2", "--warmup", "0",
                         "--out-dir", str(tmp_path)])
    cfg = load_config("real")
    teacher = build_role(cfg, "teacher")
    assert rows[1].params == sum(p.numel() for p in teacher.parameters())
    assert rows[1].params < sum(p.numel() for p in profile.build_model("unet_wide").parameters())
    assert f"Efficiency at {cfg.data.size}x{cfg.data.size}" in (tmp_path / "efficiency.md").read_text()
    assert (tmp_path / "efficiency.csv").read_text().startswith("# models: as preset 'real' trains them")


def test_preset_refuses_a_teacher_it_does_not_train(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="its teacher is 'unet_wide', not 'dynunet'"):
        profile.main(["--preset", "real", "--models", "dynunet", "--no-write"])
