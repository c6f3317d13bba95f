"""Command line: ``python -m relkd_bench.data {synth,import,inspect} ...``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from relkd_bench.data.nifti import DataError


def _synth(args: argparse.Namespace) -> int:
    from relkd_bench.data.synth import write_synthetic_collection

    t0 = time.perf_counter()
    out = write_synthetic_collection(args.out, args.cases_per_site, args.size, args.slices, args.seed)
    print(f"wrote synthetic collection to {out} in {time.perf_counter() - t0:.1f} s "
          f"(6 sites × {args.cases_per_site} cases, {args.size}×{args.size}×{args.slices}, seed {args.seed})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from relkd_bench.data.inspect import format_table, plot_midgland, summarize_collection

    root = Path(args.dir)
    summaries, bad = summarize_collection(root, site_name=args.site_name, skip_bad=args.skip_bad)
    print(format_table(summaries))
    for b in bad:
        print(f"skipped: {b}")
    png = Path(args.png) if args.png else Path(f"{root.resolve().name}_inspect.png")
    plot_midgland(summaries, png, title=args.title if args.title is not None else str(root))
    print(f"figure: {png}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from relkd_bench.data.importers import download_msd_prostate, import_collection

    src = Path(args.src)
    if args.download:
        if args.format != "msd-prostate":
            raise DataError(src, f"--download is only available for msd-prostate, not {args.format}")
        src = download_msd_prostate(src)
    t0 = time.perf_counter()
    report = import_collection(args.format, src, args.out, site=args.site,
                               progress=None if args.quiet else print, keep_zones=args.keep_zones)
    print(f"{report} ({time.perf_counter() - t0:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with the subcommands ``synth``, ``import`` and ``inspect``."""
    p = argparse.ArgumentParser(prog="python -m relkd_bench.data",
                                description="Prostate MRI collections: synthetic, import, inspection.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write the synthetic six-site collection as NIfTI (real layout)")
    s.add_argument("--out", required=True, help="output folder (ROOT/<SITE>/CaseNN.nii.gz)")
    s.add_argument("--cases-per-site", type=int, default=10)
    s.add_argument("--size", type=int, default=128, help="in-plane matrix size")
    s.add_argument("--slices", type=int, default=24, help="number of axial slices")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)
    m = sub.add_parser("import", help="import a public release into the loader's layout (+ manifest.json)")
    m.add_argument("format", help="promise12-npy | promise12 | msd-prostate | multisite-nii")
    m.add_argument("src", help="the release folder as distributed (for --download: where to put it)")
    m.add_argument("out", help="collection root to write (OUT/<SITE>/CaseNN.nii.gz)")
    m.add_argument("--site", help="site folder for one-site releases (msd-prostate: default RUNMC)")
    m.add_argument("--download", action="store_true",
                   help="msd-prostate only: fetch Task05 with MONAI's downloader (MD5 checked) into SRC")
    m.add_argument("--keep-zones", action="store_true",
                   help="msd-prostate only: keep the zones (1 peripheral, 2 transition) instead of merging "
                        "them into the gland; train on them with data.num_classes=3")
    m.add_argument("--quiet", action="store_true", help="no per-case lines")
    m.set_defaults(func=_import)
    i = sub.add_parser("inspect", help="per-site table and a mid-gland figure of a collection")
    i.add_argument("dir", help="collection root (ROOT/<SITE>/...) or a single site folder")
    i.add_argument("--png", help="figure path (default ./<DIR name>_inspect.png)")
    i.add_argument("--site-name", help="site name for a single site folder (default: folder name)")
    i.add_argument("--title", help="figure title (default: DIR)")
    i.add_argument("--skip-bad", action="store_true", help="skip bad cases and report them")
    i.set_defaults(func=_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
