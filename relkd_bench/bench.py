"""Benchmarks of the relkd ops against the eager references, as one tidy CSV.

``python -m relkd_bench.bench [--quick] [--out DIR] [--step]`` times every (op, shape, provider, mode)
case (median of repeats after warm-up) and records peak extra memory through the torch allocator
(torch.profiler memory events; CUDA: max_memory_allocated). Ratios are against the eager reference
measured in the same run. The pytest-benchmark suite in tests/benchmarks uses the same cases.

Modes: ``fwd`` (no autograd), ``fwd+bwd`` (gradients of both inputs) and ``distill`` (the student's
input requires grad, the teacher's is detached: how the losses of relkd_bench.losses call the ops).
Rooflines measured in the same run: ``gemm`` (bmm of the GEMM-equivalents a Gram op must do) and ``copy``
(a torch copy moving the bytes a memory-bound op must read and write); each row of the op it bounds
carries the fraction reached. ``--step`` adds the end-to-end training-step benchmark
(:mod:`relkd_bench.bench_step`). The ops part imports only torch and relkd_bench.ops.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from relkd_bench import ops

MODES = ("fwd", "fwd+bwd", "distill")
#: GEMM-equivalents of a Gram loss per mode: Gs and Gt forward, one (Gs − Gt)·X per input gradient.
GEMMS_PER_MODE = {"fwd": 2, "fwd+bwd": 4, "distill": 3}
#: Input-sized tensors a fused per-pixel loss must move per mode: read zs and zt (forward), read them again
#: and write each requested gradient (backward).
TENSOR_PASSES_PER_MODE = {"fwd": 2, "fwd+bwd": 6, "distill": 5}
ROOFLINES = ("gemm", "copy")


@dataclass(frozen=True)
class Case:
    """One benchmark shape of one op; ``make`` returns the op's positional inputs.

    ``gemm_flops``: FLOPs of one GEMM-equivalent (2·B·C²·N) of a Gram op, 0 otherwise; ``memory_bound``:
    the op's rows get a ``copy`` roofline of :data:`TENSOR_PASSES_PER_MODE` passes over its input.
    """

    op: str
    shape: str
    make: Callable[[torch.device], tuple]
    providers: tuple[str, ...]
    gemm_flops: float = 0.0
    memory_bound: bool = False
    pairs: float = 0.0  # pixel pairs swept (relation_kl_loss: B·N² after pooling), for ns_per_pair
    note: str = ""
    kwargs: dict = field(default_factory=dict)

    def flops(self, mode: str) -> float:
        return self.gemm_flops * GEMMS_PER_MODE[mode]


def _features(b: int, cs: int, ct: int, h: int, w: int, ht: int | None = None, wt: int | None = None):
    def make(device: torch.device) -> tuple:
        g = torch.Generator().manual_seed(0)
        fs = torch.randn(b, cs, h, w, generator=g)
        ft = torch.randn(b, ct, ht or h, wt or w, generator=g)
        return fs.to(device), ft.to(device)

    return make


def _gemm_flops(b: int, c: int, n: int) -> float:
    return 2.0 * b * c * c * n


PROVIDERS: dict[str, dict[str, Callable]] = {
    "affinity_loss": {
        "native": ops.affinity_loss,
        "reference": ops.affinity_loss_reference,
        "dual": ops.affinity_loss_dual,
    },
    "gram_loss": {"native": ops.gram_loss, "reference": ops.gram_loss_reference},
    "kd_logits_loss": {"native": ops.kd_logits_loss, "reference": ops.kd_logits_loss_reference},
    "relation_kl_loss": {"native": ops.relation_kl_loss, "reference": ops.relation_kl_loss_reference},
    "cwd_loss": {"native": ops.cwd_loss, "reference": ops.cwd_loss_reference},
}


def cases(quick: bool = False) -> list[Case]:
    """The benchmark matrix of issue #2 (``quick``: smaller shapes, no torch.compile)."""
    compiled = () if quick else ("compiled",)
    if quick:
        return [
            Case(
                "affinity_loss",
                "B=4 C=64 32x32",
                _features(4, 64, 64, 32, 32),
                ("native", "reference", "dual"),
            ),
            Case(
                "gram_loss",
                "B=4 C=128 32x32",
                _features(4, 128, 128, 32, 32),
                ("native", "reference", "gemm"),
                gemm_flops=_gemm_flops(4, 128, 1024),
            ),
            Case(
                "kd_logits_loss",
                "B=4 K=2 128x128",
                _features(4, 2, 2, 128, 128),
                ("native", "reference", "copy"),
                memory_bound=True,
            ),
            Case(
                "cwd_loss",
                "B=4 K=2 128x128",
                _features(4, 2, 2, 128, 128),
                ("native", "reference", "copy"),
                memory_bound=True,
            ),
            Case(
                "relation_kl_loss",
                "B=2 C=64 32x32",
                _features(2, 64, 64, 32, 32),
                ("native", "reference"),
                pairs=2 * 1024**2,
            ),
        ]
    return [
        Case(
            "affinity_loss",
            "B=8 C=64 64x64",
            _features(8, 64, 64, 64, 64),
            ("native", "reference", "dual", *compiled),
        ),
        Case(
            "affinity_loss",
            "B=8 C=64 64x64 labels K=2",
            _features(8, 64, 64, 64, 64),
            ("native",),
            kwargs={"labels": "binary"},
        ),
        Case("affinity_loss", "B=8 Cs=32 Ct=128 64x64", _features(8, 32, 128, 64, 64), ("native", "dual")),
        Case(
            "affinity_loss",
            "B=2 C=64 128x128",
            _features(2, 64, 64, 128, 128),
            ("native", "dual"),
            note="eager reference needs N×N = 16384² matrices (GBs): not run",
        ),
        Case(
            "gram_loss",
            "B=8 C=256 64x64",
            _features(8, 256, 256, 64, 64),
            ("native", "reference", *compiled, "gemm"),
            gemm_flops=_gemm_flops(8, 256, 4096),
        ),
        Case(
            "kd_logits_loss",
            "B=8 K=2 384x384",
            _features(8, 2, 2, 384, 384),
            ("native", "reference", *compiled, "copy"),
            memory_bound=True,
        ),
        Case(
            "kd_logits_loss",
            "B=8 K=8 384x384",
            _features(8, 8, 8, 384, 384),
            ("native", "reference", *compiled, "copy"),
            memory_bound=True,
        ),
        Case(
            "cwd_loss",
            "B=8 K=2 384x384",
            _features(8, 2, 2, 384, 384),
            ("native", "reference", *compiled, "copy"),
            memory_bound=True,
        ),
        Case(
            "relation_kl_loss",
            "B=4 C=64 64x64",
            _features(4, 64, 64, 64, 64),
            ("native", "reference"),
            pairs=4 * 4096**2,
        ),
        Case(
            "relation_kl_loss",
            "B=4 Cs=32 Ct=64 64x64",
            _features(4, 32, 64, 64, 64),
            ("native", "reference"),
            pairs=4 * 4096**2,
        ),
        Case(
            "relation_kl_loss",
            "B=1 C=64 128x128",
            _features(1, 64, 64, 128, 128),
            ("native",),
            pairs=16384**2,
            note="eager reference needs N×N = 16384² matrices (several GB): not run",
        ),
        Case(
            "relation_kl_loss",
            "B=4 C=64 64x64 pool=2",
            _features(4, 64, 64, 64, 64),
            ("native", "reference"),
            pairs=4 * 1024**2,
            kwargs={"pool": 2},
        ),
        Case(
            "relation_kl_loss",
            "B=4 C=64 64x64 pool=4",
            _features(4, 64, 64, 64, 64),
            ("native", "reference"),
            pairs=4 * 256**2,
            kwargs={"pool": 4},
        ),
    ]


def make_runner(case: Case, provider: str, mode: str, device: torch.device) -> Callable[[], object]:
    """A closure running one (case, provider, mode) once; inputs are built here, outside the timing."""
    fs, ft = case.make(device)
    kwargs = dict(case.kwargs)
    if kwargs.get("labels") == "binary":
        kwargs["labels"] = (fs[:, 0] > 0).long()
    if provider == "gemm":  # the GEMM-equivalents of the mode (Case.flops) as plain bmms
        xs = fs.flatten(2)
        return lambda: [torch.bmm(xs, xs.transpose(1, 2)) for _ in range(GEMMS_PER_MODE[mode])]
    if provider == "copy":  # a copy reads and writes: half the mode's bytes each way
        src = torch.empty(TENSOR_PASSES_PER_MODE[mode] * fs.numel() // 2, dtype=fs.dtype, device=device)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    fn = PROVIDERS[case.op]["reference" if provider == "compiled" else provider]
    if provider == "compiled":
        fn = torch.compile(fn, dynamic=False)
    if mode == "fwd":

        def run():
            with torch.no_grad():
                return fn(fs, ft, **kwargs)

        return run
    leaves = (fs.clone().requires_grad_(), ft.clone().requires_grad_(mode == "fwd+bwd"))
    wrt = leaves if mode == "fwd+bwd" else leaves[:1]

    def run_backward():
        loss = fn(*leaves, **kwargs)
        return torch.autograd.grad(loss, wrt)

    return run_backward


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def peak_extra_mb(run: Callable[[], object], device: torch.device) -> float:
    """Peak bytes allocated by one call beyond what was allocated before it, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def machine() -> str:
    """The device the rows ran on; on the CPU with the build of the native kernels (csrc/cpu/isa.h)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    build = ops.cpu_kernels()
    kernels = f", {build} kernels" if build else ""
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads{kernels}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _time_row(case: Case, provider: str, mode: str, device: torch.device, repeats: int) -> dict:
    run = make_runner(case, provider, mode, device)
    times = time_ms(run, device, repeats, warmup=2 if provider == "compiled" else 1)
    row = {
        "op": case.op,
        "shape": case.shape,
        "mode": mode,
        "provider": provider,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "peak_extra_mb": peak_extra_mb(run, device),
        "repeats": repeats,
    }
    if case.gemm_flops and provider != "copy":
        row["gflops"] = case.flops(mode) / (row["median_ms"] * 1e6)
    if case.pairs and provider not in ROOFLINES:
        row["ns_per_pair"] = row["median_ms"] * 1e6 / case.pairs
    print(
        f"{case.op:16s} {case.shape:26s} {mode:8s} {provider:10s} {row['median_ms']:10.2f} ms "
        f"{row['peak_extra_mb']:9.1f} MiB",
        flush=True,
    )
    return row


def _ratios(rows: list[dict]) -> None:
    """Per case, in place: speed-up and memory ratio against the eager reference of the same mode, the
    fraction of the mode's roofline reached, and a distill row's time over its fwd+bwd time."""
    by = {(r["mode"], r["provider"]): r for r in rows}
    for r in rows:
        if r["provider"] in ROOFLINES:
            continue
        base = by.get((r["mode"], "reference"))
        if base:
            r["speedup_vs_eager"] = base["median_ms"] / r["median_ms"]
            if r["peak_extra_mb"] > 0:
                r["memory_vs_eager"] = base["peak_extra_mb"] / r["peak_extra_mb"]
        roof = by.get((r["mode"], "gemm")) or by.get((r["mode"], "copy"))
        if roof:
            r["roofline_fraction"] = roof["median_ms"] / r["median_ms"]
        full = by.get(("fwd+bwd", r["provider"]))
        if r["mode"] == "distill" and full:
            r["vs_fwd_bwd"] = r["median_ms"] / full["median_ms"]


def run_all(quick: bool, device: torch.device, repeats: int, skip: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for case in cases(quick):
        case = replace(case, providers=tuple(p for p in case.providers if p not in skip))
        mine = [_time_row(case, provider, mode, device, repeats)
                for mode in MODES for provider in case.providers]
        _ratios(mine)
        rows += mine
        if case.note:
            rows += [{"op": case.op, "shape": case.shape, "mode": mode, "provider": "reference",
                      "note": case.note} for mode in MODES]
    return rows


COLUMNS = [
    "op",
    "shape",
    "mode",
    "provider",
    "median_ms",
    "min_ms",
    "peak_extra_mb",
    "speedup_vs_eager",
    "memory_vs_eager",
    "gflops",
    "roofline_fraction",
    "vs_fwd_bwd",
    "overhead_vs_no_kd",
    "ns_per_pair",
    "repeats",
    "note",
    "device",
    "machine",
    "torch",
    "backend",
    "commit",
    "date",
]


def write_csv(rows: list[dict], path: Path, device: torch.device) -> None:
    meta = {
        "device": device.type,
        "machine": machine(),
        "torch": torch.__version__,
        "backend": ops.backend(),
        "commit": git_commit(),
        "date": dt.date.today().isoformat(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in {**meta, **row}.items()}
            )
    os.replace(f.name, path)


def _print_summary(rows: list[dict]) -> None:
    print("\nfwd+bwd speed-up and memory ratio vs eager; distill time over fwd+bwd; share of the roofline:")
    for row in rows:
        if row.get("provider") in ("reference", None, *ROOFLINES) or "median_ms" not in row:
            continue
        parts = [f"{row['op']:16s} {row['shape']:26s} {row['mode']:8s} {row['provider']:9s}"]
        if row["mode"] == "fwd+bwd" and "speedup_vs_eager" in row:
            parts.append(f"{row['speedup_vs_eager']:6.1f}x faster")
        if row["mode"] == "fwd+bwd" and "memory_vs_eager" in row:
            parts.append(f"{row['memory_vs_eager']:7.1f}x less memory")
        if "vs_fwd_bwd" in row:
            parts.append(f"distill = {row['vs_fwd_bwd']:.2f}x fwd+bwd")
        if "roofline_fraction" in row:
            parts.append(f"{100 * row['roofline_fraction']:.0f} % of roofline")
        if len(parts) > 1:
            print("  " + " ".join(parts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relkd_bench.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, no torch.compile (a demo)")
    parser.add_argument("--out", type=Path, help="write ops_<device>.csv (and step_<device>.csv) here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed repeats per case (default 5, quick 3; training step: 20 round-robin rounds)"
    )
    parser.add_argument("--skip", nargs="*", default=(), help="providers to leave out, e.g. compiled")
    parser.add_argument("--step", nargs="*", metavar="PRESET",
                        help="also the training-step benchmark of these presets (no name: quick real)")
    parser.add_argument("--only-step", action="store_true", help="the training-step benchmark alone")
    parser.add_argument("--profile-step", metavar="VARIANT",
                        help="print the profiler table of one step of VARIANT (first --step preset) and exit")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 5)
    presets = (args.step or ["quick", "real"]) if args.step is not None or args.only_step else []
    print(f"relkd ops benchmark on {machine()} (torch {torch.__version__}, backend {ops.backend()})")
    if args.profile_step:
        from relkd_bench.bench_step import profile_step

        print(profile_step((presets or ["quick"])[0], args.profile_step, device))
        return
    if not args.only_step:
        rows = run_all(args.quick, device, repeats, tuple(args.skip))
        _print_summary(rows)
        if args.out:
            path = args.out / f"ops_{device.type}.csv"
            write_csv(rows, path, device)
            print(f"wrote {path}")
    if presets:
        from relkd_bench.bench_step import step_rows

        steps = [r for preset in presets for r in step_rows(preset, device, args.repeats or 20)]
        print("\ntraining step, overhead over the no-KD step (teacher forward excluded):")
        for r in steps:
            if "overhead_vs_no_kd" in r:
                print(f"  {r['shape']:32s} {r['mode']:22s} {r['median_ms']:9.1f} ms "
                      f"{100 * r['overhead_vs_no_kd']:+6.1f} %")
        if args.out:
            path = args.out / f"step_{device.type}.csv"
            write_csv(steps, path, device)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
