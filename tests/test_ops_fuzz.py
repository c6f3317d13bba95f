"""Fuzz of the public ops (relkd_bench.ops), as a hostile caller would use them.

Hypothesis draws batches of calls over the edges that matter: dtypes (float16/bfloat16/float32/float64,
integers, bool, complex), layouts (contiguous, channels_last, sliced, expanded with stride 0, transposed),
sizes (empty, 1x1, mismatched batch/channels/spatial, wrong ndim), magnitudes (0 to 1e30, NaN, Inf, zero maps
and pixels), and the scalars (temperature, eps, weights, pool, num_classes, of wrong types and out of range).
Backward calls ask for both gradients or, as distillation does, the student's alone (teacher detached).
Each batch runs in its own process, so a crash is reported as a failure naming the call. Every call must
either return a finite loss ≥ 0 with finite gradients (a float64 call of moderate size also matching the
reference definition), or raise a ValueError/TypeError whose message starts with the op's name; with
check_finite=False and non-finite inputs anything the arithmetic gives is accepted.
Sized to about a minute (RELKD_FUZZ_BATCHES sets the number of batches).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relkd_bench import ops

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")

NAN, INF = "nan", "inf"
# Valid values of each field, and the edges; a drawn call has valid fields except (mostly) one or two edges,
# so that both the checks and the numerics get exercised.
VALID = {
    "op": ["gram", "affinity", "affinity_labels", "kd", "cwd", "relation_kl"],
    "dtype": ["float32", "float64"],
    "other_dtype": [None],
    "b": [1, 2, 3],
    "bt": [None],
    "cs": [1, 2, 3, 5],
    "ct": [None],
    "h": [1, 2, 3, 5, 8],
    "w": [1, 2, 4, 6, 8],
    "ht": [None],
    "ndim": [4],
    "layout": ["contiguous", "channels_last", "sliced", "expanded", "transposed"],
    "scale": [1.0, 1e-3, 10.0],
    "special": [None, "zero_map", "zero_pixel"],
    "temperature": [1e-3, 0.05, 0.5, 1.0, 4.0, 20.0, 1e3],
    "eps": [1e-12, 1e-3],
    "weights": [(1.0, 1.0), (0.0, 2.0), (0.5, 1.5)],
    "pool": [1, 1, 2, 3],
    "num_classes": [None, 3, 5],
    "labels": ["ok"],
    "check_finite": [True, False],
    "backward": ["both", "student", False],  # "student": the teacher detached, as distillation calls the ops
}
EDGES = {
    "dtype": ["float16", "bfloat16", "int64", "bool", "complex64"],
    "other_dtype": ["float64", "float32", "int32"],
    "b": [0],
    "bt": [1, 4],
    "cs": [0],
    "ct": [4, 7],
    "h": [0],
    "ht": [1, 7],
    "ndim": [0, 3, 5],
    "scale": [0.0, 1e-30, 1e30],
    "special": [NAN, INF],
    "temperature": [0.0, -1.0, NAN, INF, 1e-4, 1e4, 1e9, 1e30, None, True, "4"],
    "eps": [0.0, -1.0, NAN, INF, None],
    "weights": [(-1.0, 1.0), (NAN, 1.0), (1.0, INF)],
    "pool": [0, -1, 9, 2**31, 2.0, True],
    "num_classes": [1, 0, 4097, 2**40, 2**63, 2.5],
    "labels": ["negative", "big", "float", "shape", "int32", "bool"],
}


@st.composite
def CASE(draw) -> dict:  # noqa: N802 (a strategy, named like one)
    case = {k: draw(st.sampled_from(v)) for k, v in VALID.items()}
    case["temperature"] = draw(st.one_of(st.sampled_from(VALID["temperature"]), st.floats(1e-3, 1e3)))
    for field in draw(st.lists(st.sampled_from([None] * 8 + list(EDGES)), max_size=2)):
        if field is not None:
            case[field] = draw(st.sampled_from(EDGES[field]))
    case["seed"] = draw(st.integers(0, 2**16))
    return case


RUNNER = textwrap.dedent(
    r"""
    import json, math, sys, torch
    from relkd_bench import ops

    DTYPES = {n: getattr(torch, n) for n in ("float16", "bfloat16", "float32", "float64", "int64", "int32",
                                             "bool", "complex64")}

    def number(v):
        return float(v) if v in ("nan", "inf") else v

    def tensor(c, b, ch, h, w, dtype, g):
        x = torch.randn(b, ch, h, 2 * w, generator=g, dtype=torch.float64)[..., ::2] * c["scale"]
        if c["special"] == "nan" and x.numel():
            x.view(-1)[0] = float("nan")
        elif c["special"] == "inf" and x.numel():
            x.view(-1)[-1] = float("inf")
        elif c["special"] == "zero_map" and b:
            x[0] = 0
        elif c["special"] == "zero_pixel" and x.numel():
            x[..., 0, 0] = 0
        x = x.to(DTYPES[dtype])
        layout = c["layout"]
        if layout == "contiguous":
            x = x.contiguous()
        elif layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "expanded" and h:
            x = x[:, :, :1].expand(b, ch, h, w)
        elif layout == "transposed" and h == w:
            x = x.transpose(2, 3)
        if c["ndim"] == 0:
            return x.flatten()[:1].sum() if x.is_floating_point() else torch.tensor(1.0)
        if c["ndim"] == 3:
            return x[0] if b else x.flatten(0, 1)
        if c["ndim"] == 5:
            return x[None]
        return x

    def labels(c, b, h, w, g):
        y = torch.randint(0, 3, (b, h, w), generator=g)
        kind = c["labels"]
        if kind == "negative" and y.numel():
            y.view(-1)[0] = -1
        elif kind == "big" and y.numel():
            y.view(-1)[0] = 10**6
        elif kind == "float":
            y = y.float()
        elif kind == "shape":
            y = y[:, :, : max(w - 1, 0)]
        elif kind == "int32":
            y = y.int()
        elif kind == "bool":
            y = y > 0
        return y

    def call(c):
        g = torch.Generator().manual_seed(c["seed"])
        b, ch, h, w = c["b"], c["cs"], c["h"], c["w"]
        bt, ct, ht = c["bt"] or b, c["ct"] or ch, c["ht"] or h
        dt = c["other_dtype"] or c["dtype"]
        op = c["op"]
        if op in ("kd", "cwd"):
            ct = c["ct"] if c["ct"] and c["ht"] else ch  # mostly the same shape, sometimes not
        fs = tensor(c, b, ch, h, w, c["dtype"], g)
        ft = tensor(c, bt, ct, ht, w, dt, g)
        wanted = (fs,) if c["backward"] == "student" else (fs, ft)
        leaves = [t.requires_grad_() for t in wanted if t.is_floating_point()]
        t, cf = number(c["temperature"]), c["check_finite"]
        if op == "gram":
            name, run = "gram_loss", lambda: ops.gram_loss(fs, ft, check_finite=cf)
            ref = lambda: ops.gram_loss_reference(fs, ft)
        elif op == "kd":
            name, run = "kd_logits_loss", lambda: ops.kd_logits_loss(fs, ft, t, check_finite=cf)
            ref = lambda: ops.kd_logits_loss_reference(fs, ft, t)
        elif op == "cwd":
            name, run = "cwd_loss", lambda: ops.cwd_loss(fs, ft, t, check_finite=cf)
            ref = lambda: ops.cwd_loss_reference(fs, ft, t)
        elif op == "relation_kl":
            eps, pool = number(c["eps"]), c["pool"]
            name = "relation_kl_loss"
            run = lambda: ops.relation_kl_loss(fs, ft, t, pool, eps, check_finite=cf)
            ref = lambda: ops.relation_kl_loss_reference(fs, ft, t, pool, eps)
        else:
            eps, (wi, we) = number(c["eps"]), (number(v) for v in c["weights"])
            y = labels(c, b, h, w, g) if op == "affinity_labels" else None
            k = c["num_classes"] if y is not None else None
            name = "affinity_loss"
            run = lambda: ops.affinity_loss(fs, ft, y, wi, we, eps, num_classes=k, check_finite=cf)
            ref = lambda: ops.affinity_loss_reference(fs, ft, y, wi, we, eps)
        try:
            loss = run()
            grads = torch.autograd.grad(loss, leaves) if c["backward"] and leaves else ()
        except (ValueError, TypeError) as exc:
            msg = str(exc).splitlines()[0]
            return None if msg.startswith(name + ":") or msg.startswith(name + "_backward:") else msg
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        finite_in = all(bool(torch.isfinite(x).all()) for x in (fs, ft))
        if not finite_in or c["scale"] > 1e3:
            return None  # check_finite=False with NaN/Inf in, or overflow-sized values: any result
        if not bool(torch.isfinite(loss)) or float(loss) < 0:
            return f"loss {float(loss)} (finite inputs)"
        if c["scale"] >= 1e-3 and not all(bool(torch.isfinite(x).all()) for x in grads):
            return "non-finite gradient (finite inputs)"
        small = fs.dim() == 4 and fs.shape[2] * fs.shape[3] <= 64
        if fs.dtype == torch.float64 and c["scale"] >= 1e-3 and small:
            expected = float(ref().detach())
            if abs(float(loss) - expected) > 1e-6 * abs(expected) + 1e-9:
                return f"loss {float(loss)} but the definition gives {expected}"
        return None

    for c in json.load(sys.stdin):
        print(json.dumps({"started": c}), flush=True)
        problem = call(c)
        if problem is not None:
            print(json.dumps({"case": c, "problem": problem}), flush=True)
    print(json.dumps({"done": True}), flush=True)
    """
)


def run_batch(cases: list[dict]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(cases), capture_output=True, text=True, timeout=300
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    problems = [f"{r['problem']} <- {r['case']}" for r in lines if "problem" in r]
    if not lines or "done" not in lines[-1]:
        last = next((r["started"] for r in reversed(lines) if "started" in r), None)
        problems.append(f"the process died (rc {proc.returncode}) in {last}: {proc.stderr[-1500:]}")
    return problems


@settings(
    max_examples=int(os.environ.get("RELKD_FUZZ_BATCHES", "12")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases=st.lists(CASE(), min_size=40, max_size=40))
def test_fuzz_public_ops(cases):
    problems = run_batch(cases)
    assert not problems, "\n".join(problems[:10])
