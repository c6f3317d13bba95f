"""Command line: score a trained model on a collection or a one-site folder (per-volume 3D metrics).

Example (one real case)::

    python -m relkd_bench.evaluate --checkpoint runs/quick/student-enet-.../best.pt \\
        --data ../shared/data/promise12_case00 --site PROMISE12

Dice, HD95 and ASSD (mm, from the NIfTI spacing) after keeping the largest connected component; a
per-case table, then per-site means. ``--json FILE`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relkd_bench.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (best.pt or last.pt)")
    p.add_argument("--data", required=True, type=Path, help="collection root or one site folder")
    p.add_argument("--site", default=None,
                   help="site to score (any alias); for a one-site folder, the name to give its cases")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessing cache [runs/cache]")
    p.add_argument("--batch-size", type=int, default=32, help="slices per forward pass")
    p.add_argument("--no-lcc", action="store_true", help="do not keep only the largest connected component")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "   nan"
    return f"{v:6.3f}" if abs(v) < 100 else f"{v:6.1f}"


def _label(key: str) -> str:
    return {"dice": "Dice", "hd95": "HD95", "assd": "ASSD"}.get(key) or key.replace("dice_c", "Dice")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from relkd_bench.data import DataError
    from relkd_bench.engine import CheckpointError, evaluate_checkpoint
    from relkd_bench.engine.metrics import class_keys

    try:
        rows, table = evaluate_checkpoint(args.checkpoint, args.data, args.site, args.device, args.cache_dir,
                                          args.batch_size, keep_lcc=not args.no_lcc)
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    keys = ["dice", "hd95", "assd", *(k for k in class_keys(rows) if k.startswith("dice_"))]
    head = " ".join(f"{_label(k):>6}" for k in keys)  # more than 2 classes: Dice per class, e.g. Dice1
    print(f"{'case':<24} {head}")
    for r in rows:
        print(f"{r['uid']:<24} " + " ".join(_fmt(r[k]) for k in keys))
    print(f"{'site (mean)':<24} {head}    n")
    for site, m in table.items():
        print(f"{site:<24} " + " ".join(_fmt(m[k]) for k in keys) + f" {m['n']:4d}")
    if args.json:
        from relkd_bench.engine.api import _json_safe

        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"checkpoint": str(args.checkpoint), "data": str(args.data), "cases": rows, "sites": table}
        args.json.write_text(json.dumps(_json_safe(out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
