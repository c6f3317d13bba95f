"""Efficiency profile of every teacher and student: parameters, GFLOPs, CPU latency, checkpoint size.

Usage::

    python -m relkd_bench.profile [--size 384] [--in-channels 1] [--models enet unet_wide ...]
                                  [--runs 20] [--warmup 3] [--threads 2] [--out-dir results]
    python -m relkd_bench.profile --preset real --out-dir results/students

``--preset`` profiles the models as that preset's training builds them (``engine.build_role``: its input
size and channels, its classes, the teacher's and student's ``kwargs``, e.g. the real preset's slim
``unet_wide``); without it every model has its registry defaults.

Conventions:

- FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass at batch 1:
  convolutions (incl. transposed) and matrix products only, counted as FLOPs = 2 x MACs;
  normalization, activations, pooling and element-wise ops are not counted. GFLOPs = 1e9 FLOPs.
- Latency: eval mode, ``torch.inference_mode``, batch 1, fp32, ``--threads`` intra-op threads;
  ``--warmup`` untimed runs, then the median (and min) of ``--runs`` timed runs (perf_counter).
- Checkpoint size: ``torch.save(model.state_dict())`` on disk, in MB = 1e6 bytes.

Writes ``<out-dir>/efficiency.md`` and ``<out-dir>/efficiency.csv`` atomically (temp file + rename).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from relkd_bench.config import ExperimentConfig, load_config
from relkd_bench.models import build_model, list_models, model_role

__all__ = ["ProfileRow", "count_flops", "main", "measure_latency", "profile_model"]

PUBLISHED_PARAMS = {
    "enet": (370_000, "Paszke et al. 2016, Table 3"),
    "erfnet": (2_060_000, "Romera et al. 2018, authors' code, 20 classes"),
    "espnet": (364_000, "Mehta et al. 2018, 20 classes, RGB"),
}
PAPER_STUDENT = {"params": 353_000, "gflops": 2.2}  # RelKD paper's ENet student at 384x384


@dataclass
class ProfileRow:
    """One line of the efficiency table."""

    model: str
    role: str
    params: int
    gflops: float
    latency_ms: float
    latency_min_ms: float
    size_mb: float


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 x MACs, conv/matmul only) of one forward pass of ``model`` on ``x``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def measure_latency(model: torch.nn.Module, x: torch.Tensor, runs: int = 20, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of ``runs`` forward passes after ``warmup`` untimed ones."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return times


def checkpoint_mb(model: torch.nn.Module) -> float:
    """Size of ``torch.save(model.state_dict())`` in MB (1e6 bytes)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ckpt.pt")
        torch.save(model.state_dict(), path)
        return os.path.getsize(path) / 1e6


def profile_model(
    name: str, size: int = 384, in_channels: int = 1, runs: int = 20, warmup: int = 3,
    model: torch.nn.Module | None = None,
) -> ProfileRow:
    """Profile ``model`` (default: the registered model ``name`` with its defaults) on a
    ``[1, in_channels, size, size]`` input."""
    torch.manual_seed(0)
    model = (model if model is not None else build_model(name, in_channels=in_channels)).eval()
    x = torch.randn(1, in_channels, size, size)
    times = measure_latency(model, x, runs=runs, warmup=warmup)
    return ProfileRow(
        model=name,
        role=model_role(name),
        params=sum(p.numel() for p in model.parameters()),
        gflops=count_flops(model, x) / 1e9,
        latency_ms=1e3 * statistics.median(times),
        latency_min_ms=1e3 * min(times),
        size_mb=checkpoint_mb(model),
    )


def preset_models(preset: str, names: Sequence[str] | None = None,
                  ) -> tuple[ExperimentConfig, dict[str, torch.nn.Module]]:
    """The preset's config and its models by name, built as its training builds them: every student
    (``student.name`` replaced, as a sweep over students does) and the preset's own teacher; a name
    that is neither is an error (its width would be a guess)."""
    from relkd_bench.engine import build_role  # the one rule for how a run builds its models

    cfg = load_config(preset)
    names = list(names or [*list_models("student"), cfg.teacher.name])
    models = {}
    for n in names:
        if model_role(n) == "student":
            models[n] = build_role(replace(cfg, student=replace(cfg.student, name=n)), "student")
        elif n == cfg.teacher.name:
            models[n] = build_role(cfg, "teacher")
        else:
            raise ValueError(f"--preset {preset}: its teacher is {cfg.teacher.name!r}, not {n!r}")
    return cfg, models


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa() -> str:
    """Widest x86 vector extension the CPU reports (AVX-512 / AVX2 / AVX), else the architecture."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return label
    return "no AVX"


def provenance(threads: int, runs: int, warmup: int) -> dict[str, str]:
    """Machine, software and commit the numbers come from."""
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_name()} ({os.cpu_count()} logical CPUs, {platform.machine()}, {_isa()})",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": str(threads),
        "commit": _git_commit(),
        "latency protocol": f"batch 1, fp32, inference_mode, {warmup} warm-up runs, median of {runs}",
    }


def to_csv(rows: Sequence[ProfileRow], built_as: str) -> str:
    """The rows as CSV after one ``# models: <built_as>`` line (readers skip ``#`` lines; the report's
    efficiency table quotes it)."""
    buf = io.StringIO()
    buf.write(f"# models: {built_as}\n")
    writer = csv.DictWriter(buf, fieldnames=list(asdict(rows[0])), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = asdict(r)
        d.update({k: f"{d[k]:.3f}" for k in ("gflops", "latency_ms", "latency_min_ms", "size_mb")})
        writer.writerow(d)
    return buf.getvalue()


def to_markdown(rows: Sequence[ProfileRow], size: int, in_channels: int, prov: dict[str, str]) -> str:
    lines = [
        f"# Efficiency at {size}x{size}, {in_channels} input channel(s), 2 classes",
        "",
        "| model | role | params | GFLOPs | CPU latency median (ms) | min (ms) | checkpoint (MB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.role} | {r.params:,} ({r.params / 1e6:.3f} M) | {r.gflops:.2f} | "
            f"{r.latency_ms:.1f} | {r.latency_min_ms:.1f} | {r.size_mb:.2f} |"
        )
    published = [(r, PUBLISHED_PARAMS[r.model]) for r in rows if r.model in PUBLISHED_PARAMS]
    if published:
        lines += ["", "| student | published params (source) | ours | deviation |", "|---|---|---:|---:|"]
        for r, (n, src) in published:
            lines.append(
                f"| {r.model} | {n / 1e6:.3f} M ({src}) | {r.params / 1e6:.3f} M | "
                f"{100 * (r.params / n - 1):+.1f} % |"
            )
    enet = next((r for r in rows if r.model == "enet"), None)
    if enet is not None:
        dp = 100 * (enet.params / PAPER_STUDENT["params"] - 1)
        df = 100 * (enet.gflops / PAPER_STUDENT["gflops"] - 1)
        lines += [
            "",
            f"Paper's student: about {PAPER_STUDENT['params']:,} parameters and {PAPER_STUDENT['gflops']} "
            f"GFLOPs. Our ENet: {enet.params:,} ({dp:+.1f} %) and {enet.gflops:.2f} GFLOPs ({df:+.1f} %)"
            + (" at this input size." if size == 384 else f" at {size}x{size} (the paper's is 384x384)."),
        ]
    lines += [
        "",
        (
            "Conventions: FLOPs from `torch.utils.flop_counter` (convolutions and matrix products only, "
            "FLOPs = 2 x MACs; norms, activations, pooling not counted), one forward pass at batch 1. "
            "Checkpoint = `torch.save(state_dict)` on disk, MB = 1e6 bytes. "
            "`teacher_ensemble` = 5 x `unet_wide` (one teacher per source site). Latency: median and "
            "min of the timed runs after warm-up, batch 1; the load average below says whether other "
            "processes shared the CPUs (a load near or above the thread count inflates the medians)."
        ),
        "",
        "Provenance:",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in prov.items()]
    return "\n".join(lines) + "\n"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> list[ProfileRow]:
    parser = argparse.ArgumentParser(prog="python -m relkd_bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="input height = width (default 384)")
    parser.add_argument("--in-channels", type=int, default=None, help="default 1")
    parser.add_argument("--preset", default=None,
                        help="build the models as this preset trains them, at its input size and channels")
    parser.add_argument("--models", nargs="+", default=None, help=f"default: all of {list_models()}")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (median reported; >= 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--out-dir", type=Path, default=Path("results"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    for n in args.models or []:
        model_role(n)  # ValueError listing known models
    models: dict[str, torch.nn.Module] = {}
    if args.preset is not None:
        if args.size is not None or args.in_channels is not None:
            parser.error("--preset sets the input size and channels; drop --size / --in-channels")
        cfg, models = preset_models(args.preset, args.models)
        names, size, in_channels = list(models), cfg.data.size, cfg.data.context_slices
    else:
        names = args.models or [*list_models("student"), *list_models("teacher")]
        size, in_channels = args.size or 384, args.in_channels or 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for n in names:
        print(f"profiling {n} ...", file=sys.stderr, flush=True)
        rows.append(profile_model(n, size, in_channels, runs=args.runs, warmup=args.warmup,
                                  model=models.get(n)))
    prov = provenance(torch.get_num_threads(), args.runs, args.warmup)
    prov["models"] = (f"as preset {args.preset!r} trains them (engine.build_role)" if args.preset is not None
                      else "the registry's default widths")
    prov["models"] += f", input {size}x{size}x{in_channels}"
    prov["load average (1 min) before / after"] = f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"
    md = to_markdown(rows, size, in_channels, prov)
    print(md)
    if not args.no_write:
        atomic_write(args.out_dir / "efficiency.md", md)
        atomic_write(args.out_dir / "efficiency.csv", to_csv(rows, prov["models"]))
    return rows


if __name__ == "__main__":
    main()
