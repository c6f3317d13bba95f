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
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["espnet", "enet"]
    assert int(table[1]["params"]) == sum(p.numel() for p in profile.build_model("enet").parameters())
    assert float(table[1]["size_mb"]) > 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
