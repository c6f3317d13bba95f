"""Argument checks of the ops, one home per rule: csrc/common/checks.cpp (relkd_bench/ops/_checks.py for
Python types only).

* Every bad value goes through the Python API and through ``torch.ops.relkd.*`` directly and must raise the
  same exception with the same message.
* Every backward op, called directly with arguments that do not belong together (the heap corruption of
  issue 16 was one), must raise a clear error; each op's cases run in a subprocess, so that a crash fails
  the test instead of killing the runner.
* Python-type mistakes raise a TypeError naming the argument.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from relkd_bench import ops

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")
R = torch.ops.relkd


def _pair(b=2, cs=3, ct=3, h=4, w=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, cs, h, w, generator=g, dtype=dtype), torch.randn(
        b, ct, h, w, generator=g, dtype=dtype
    )


A, B = _pair()
A3 = _pair(ct=5)[1]  # 5 channels
Y = torch.zeros(2, 4, 4, dtype=torch.long)
Y[:, :2] = 1

# (case, Python API call, the same arguments through torch.ops.relkd.*)
SAME_ERROR = [
    # gram_loss
    ("gram 3-D", lambda: ops.gram_loss(A[0], B), lambda: R.gram_loss(A[0], B, True)),
    ("gram batch", lambda: ops.gram_loss(A, B[:1]), lambda: R.gram_loss(A, B[:1], True)),
    ("gram channels", lambda: ops.gram_loss(A, A3), lambda: R.gram_loss(A, A3, True)),
    ("gram int", lambda: ops.gram_loss(A.int(), B.int()), lambda: R.gram_loss(A.int(), B.int(), True)),
    ("gram dtypes", lambda: ops.gram_loss(A, B.double()), lambda: R.gram_loss(A, B.double(), True)),
    ("gram empty", lambda: ops.gram_loss(A[:, :, :0], B), lambda: R.gram_loss(A[:, :, :0], B, True)),
    ("gram half", lambda: ops.gram_loss(A.half(), B.half()), lambda: R.gram_loss(A.half(), B.half(), True)),
    ("gram meta", lambda: ops.gram_loss(A, B.to("meta")), lambda: R.gram_loss(A, B.to("meta"), True)),
    # kd_logits_loss
    (
        "kd shape",
        lambda: ops.kd_logits_loss(A, B[..., :2]),
        lambda: R.kd_logits_loss(A, B[..., :2], 4.0, True),
    ),
    ("kd classes", lambda: ops.kd_logits_loss(A, A3), lambda: R.kd_logits_loss(A, A3, 4.0, True)),
    ("kd bool", lambda: ops.kd_logits_loss(A > 0, B > 0), lambda: R.kd_logits_loss(A > 0, B > 0, 4.0, True)),
    (
        "kd bf16",
        lambda: ops.kd_logits_loss(A.bfloat16(), B.bfloat16()),
        lambda: R.kd_logits_loss(A.bfloat16(), B.bfloat16(), 4.0, True),
    ),
    *[
        (f"kd T={t}", lambda t=t: ops.kd_logits_loss(A, B, t), lambda t=t: R.kd_logits_loss(A, B, t, True))
        for t in (0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-4, 1e4, 1e30)
    ],
    # cwd_loss
    ("cwd shape", lambda: ops.cwd_loss(A, B[..., :2]), lambda: R.cwd_loss(A, B[..., :2], 1.0, True)),
    ("cwd channels", lambda: ops.cwd_loss(A, A3), lambda: R.cwd_loss(A, A3, 1.0, True)),
    ("cwd batch", lambda: ops.cwd_loss(A, B[:1]), lambda: R.cwd_loss(A, B[:1], 1.0, True)),
    ("cwd 3-D", lambda: ops.cwd_loss(A[0], B), lambda: R.cwd_loss(A[0], B, 1.0, True)),
    (
        "cwd empty",
        lambda: ops.cwd_loss(A[:, :0], B[:, :0]),
        lambda: R.cwd_loss(A[:, :0], B[:, :0], 1.0, True),
    ),
    ("cwd bool", lambda: ops.cwd_loss(A > 0, B > 0), lambda: R.cwd_loss(A > 0, B > 0, 1.0, True)),
    ("cwd dtypes", lambda: ops.cwd_loss(A, B.double()), lambda: R.cwd_loss(A, B.double(), 1.0, True)),
    ("cwd half", lambda: ops.cwd_loss(A.half(), B.half()), lambda: R.cwd_loss(A.half(), B.half(), 1.0, True)),
    *[
        (f"cwd T={t}", lambda t=t: ops.cwd_loss(A, B, t), lambda t=t: R.cwd_loss(A, B, t, True))
        for t in (0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-4, 1e4, 1e30)
    ],
    # relation_kl_loss
    (
        "rkl spatial",
        lambda: ops.relation_kl_loss(A, B[..., :3]),
        lambda: R.relation_kl_loss(A, B[..., :3], 1.0, 1e-12, True),
    ),
    (
        "rkl batch",
        lambda: ops.relation_kl_loss(A, B[:1]),
        lambda: R.relation_kl_loss(A, B[:1], 1.0, 1e-12, True),
    ),
    (
        "rkl batch pooled",
        lambda: ops.relation_kl_loss(A, B[:1], pool=2),
        lambda: R.relation_kl_loss(A, B[:1], 1.0, 1e-12, True),
    ),
    (
        "rkl spatial pooled",
        lambda: ops.relation_kl_loss(A, B[..., :3], pool=2),
        lambda: R.relation_kl_loss(A, B[..., :3], 1.0, 1e-12, True),
    ),
    (
        "rkl long pooled",
        lambda: ops.relation_kl_loss(A.long(), B.long(), pool=2),
        lambda: R.relation_kl_loss(A.long(), B.long(), 1.0, 1e-12, True),
    ),
    *[
        (
            f"rkl T={t}",
            lambda t=t: ops.relation_kl_loss(A, B, t),
            lambda t=t: R.relation_kl_loss(A, B, t, 1e-12, True),
        )
        for t in (0.0, -1.0, float("nan"), float("inf"), 1e-4, 1e6, 1e9, 1e30)
    ],
    *[
        (
            f"rkl eps={e}",
            lambda e=e: ops.relation_kl_loss(A, B, eps=e),
            lambda e=e: R.relation_kl_loss(A, B, 1.0, e, True),
        )
        for e in (0.0, -1e-12, float("nan"), float("inf"))
    ],
    # affinity_loss
    (
        "aff spatial",
        lambda: ops.affinity_loss(A, B[..., :3]),
        lambda: R.affinity_loss(A, B[..., :3], None, 1, 1.0, 1.0, 1e-12, True),
    ),
    (
        "aff f64/f32",
        lambda: ops.affinity_loss(A.double(), B),
        lambda: R.affinity_loss(A.double(), B, None, 1, 1.0, 1.0, 1e-12, True),
    ),
    *[
        (
            f"aff eps={e}",
            lambda e=e: ops.affinity_loss(A, B, eps=e),
            lambda e=e: R.affinity_loss(A, B, None, 1, 1.0, 1.0, e, True),
        )
        for e in (0.0, float("nan"))
    ],
    *[
        (
            f"aff {name}={v}",
            lambda kw={name: v}: ops.affinity_loss(A, B, Y, **kw),
            lambda w=(v, 1.0) if name == "intra_weight" else (1.0, v): R.affinity_loss(
                A, B, Y, 2, *w, 1e-12, True
            ),
        )
        for name in ("intra_weight", "inter_weight")
        for v in (-1.0, float("nan"), float("inf"))
    ],
    (
        "aff float labels",
        lambda: ops.affinity_loss(A, B, Y.float()),
        lambda: R.affinity_loss(A, B, Y.float(), 2, 1.0, 1.0, 1e-12, True),
    ),
    (
        "aff labels shape",
        lambda: ops.affinity_loss(A, B, Y[:, :3]),
        lambda: R.affinity_loss(A, B, Y[:, :3], 2, 1.0, 1.0, 1e-12, True),
    ),
    (
        "aff labels batch",
        lambda: ops.affinity_loss(A, B, Y[:1], num_classes=2),
        lambda: R.affinity_loss(A, B, Y[:1], 2, 1.0, 1.0, 1e-12, True),
    ),
    (
        "aff labels < 0",
        lambda: ops.affinity_loss(A, B, Y - 1, num_classes=2),
        lambda: R.affinity_loss(A, B, Y - 1, 2, 1.0, 1.0, 1e-12, True),
    ),
    (
        "aff labels >= K",
        lambda: ops.affinity_loss(A, B, Y, num_classes=1),
        lambda: R.affinity_loss(A, B, Y, 1, 1.0, 1.0, 1e-12, True),
    ),
    *[
        (
            f"aff num_classes={k}",
            lambda k=k: ops.affinity_loss(A, B, Y, num_classes=k),
            lambda k=k: R.affinity_loss(A, B, Y, k, 1.0, 1.0, 1e-12, True),
        )
        for k in (0, -5, 4097, 2**40, 2**63 - 1)
    ],
]


def _raised(call) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value).split("\nException raised from")[0]


@pytest.mark.parametrize("case,python_call,raw_call", SAME_ERROR, ids=[c[0] for c in SAME_ERROR])
def test_python_api_and_raw_op_raise_the_same_error(case, python_call, raw_call):
    exc, message = _raised(python_call)
    assert (exc, message) == _raised(raw_call)
    assert exc in (ValueError, TypeError), (exc, message)
    ops_named = ("gram_loss", "kd_logits_loss", "relation_kl_loss", "affinity_loss", "cwd_loss")
    assert message.split(":")[0] in ops_named


PYTHON_TYPES = [
    (lambda: ops.kd_logits_loss(A, B, None), TypeError, "kd_logits_loss: temperature must be a real number"),
    (lambda: ops.kd_logits_loss(A, B, True), TypeError, "kd_logits_loss: temperature must be a real number"),
    (lambda: ops.kd_logits_loss(A, B, "4"), TypeError, "kd_logits_loss: temperature must be a real number"),
    (lambda: ops.kd_logits_loss(A.numpy(), B), TypeError, "kd_logits_loss: zs must be a torch.Tensor"),
    (
        lambda: ops.relation_kl_loss(A, B, None),
        TypeError,
        "relation_kl_loss: temperature must be a real number",
    ),
    (
        lambda: ops.relation_kl_loss(A, B, False),
        TypeError,
        "relation_kl_loss: temperature must be a real number",
    ),
    (lambda: ops.relation_kl_loss(A, B, 10**400), ValueError, "relation_kl_loss: temperature is too large"),
    (lambda: ops.relation_kl_loss(A, B, pool=2.0), TypeError, "relation_kl_loss: pool must be an int"),
    (lambda: ops.relation_kl_loss(A, B, pool=True), TypeError, "relation_kl_loss: pool must be an int"),
    (
        lambda: ops.relation_kl_loss(A, B, pool=2**31),
        ValueError,
        "relation_kl_loss: pool must be in [1, max(H, W) = 4]",
    ),
    (
        lambda: ops.relation_kl_loss(A, B, pool=0),
        ValueError,
        "relation_kl_loss: pool must be in [1, max(H, W) = 4]",
    ),
    (lambda: ops.relation_kl_loss(A, B, eps=None), TypeError, "relation_kl_loss: eps must be a real number"),
    (lambda: ops.gram_loss(A, None), TypeError, "gram_loss: ft must be a torch.Tensor"),
    (lambda: ops.cwd_loss(A, B, None), TypeError, "cwd_loss: temperature must be a real number"),
    (lambda: ops.cwd_loss(A, B, True), TypeError, "cwd_loss: temperature must be a real number"),
    (lambda: ops.cwd_loss(A, B, 10**400), ValueError, "cwd_loss: temperature is too large"),
    (lambda: ops.cwd_loss(A, B.numpy()), TypeError, "cwd_loss: yt must be a torch.Tensor"),
    (
        lambda: ops.affinity_loss(A, B, Y, num_classes=2**63),
        ValueError,
        "affinity_loss: num_classes must fit in int64",
    ),
    (
        lambda: ops.affinity_loss(A, B, Y, num_classes=2.0),
        TypeError,
        "affinity_loss: num_classes must be an int",
    ),
    (
        lambda: ops.affinity_loss(A, B, Y, num_classes=True),
        TypeError,
        "affinity_loss: num_classes must be an int",
    ),
    (
        lambda: ops.affinity_loss(A, B, Y, intra_weight=None),
        TypeError,
        "affinity_loss: intra_weight must be a real",
    ),
    (lambda: ops.affinity_loss(A, B, [[0]]), TypeError, "affinity_loss: labels must be a torch.Tensor"),
]


@pytest.mark.parametrize("call,exc,message", PYTHON_TYPES)
def test_python_types_name_the_argument(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


def test_numbers_of_other_types_are_accepted():
    np = pytest.importorskip("numpy")
    expected = ops.kd_logits_loss(A, B, 2.0)
    for t in (2, np.float32(2.0), np.int64(2)):
        torch.testing.assert_close(ops.kd_logits_loss(A, B, t), expected)
    torch.testing.assert_close(
        ops.relation_kl_loss(A, B, pool=np.int64(2)), ops.relation_kl_loss(A, B, pool=2)
    )


def test_compiled_shape_error_is_the_ops_error():
    """Under torch.compile(fullgraph=True) a bad shape surfaces as the op's own ValueError when it runs (the
    fake registrations describe outputs without judging inputs)."""
    fs, ft = _pair(b=2)
    for fn, args, message in [
        (lambda a, b: ops.relation_kl_loss(a, b, 0.5), (fs, ft[:1]), "relation_kl_loss: batch sizes differ"),
        (lambda a, b: ops.gram_loss(a, b), (fs[0], ft), "gram_loss: fs must be 4-D"),
        (
            lambda a, b: ops.kd_logits_loss(a, b, 2.0),
            (fs, ft[..., :2]),
            "kd_logits_loss: zs and zt must have",
        ),
        (lambda a, b: ops.cwd_loss(a, b, 2.0), (fs, ft[..., :2]), "cwd_loss: ys and yt must have one shape"),
    ]:
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        with pytest.raises(ValueError, match=message):
            compiled(*args)


# --- backward ops with arguments that do not belong together, each op in its own process -------------------

BACKWARD_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    import relkd_bench.ops  # registers the ops
    R = torch.ops.relkd
    g = torch.Generator().manual_seed(0)
    def rnd(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=dtype)
    one, fs, ft = torch.tensor(1.0), rnd(2, 3, 4, 4), rnd(2, 3, 4, 4)
    small, big = rnd(1, 3, 1, 1), rnd(1, 3, 64, 64)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    op = sys.argv[1]
    if op == "gram":
        M = [True, False]  # distillation's output_mask: the teacher's arguments are checked all the same
        diff = R.gram_loss(fs, ft, True)[1]
        cases = {
            "issue 16 shapes": lambda: R.gram_loss_backward(one, big, small, torch.zeros(2, 3, 3), M),
            "batch": lambda: R.gram_loss_backward(one, fs, ft[:1], diff, M),
            "channels": lambda: R.gram_loss_backward(one, fs, rnd(2, 5, 4, 4), diff, M),
            "diff shape": lambda: R.gram_loss_backward(one, fs, ft, diff[:, :2], M),
            "diff of another batch": lambda: R.gram_loss_backward(one, fs[:1], ft[:1], diff, M),
            "diff dtype": lambda: R.gram_loss_backward(one, fs, ft, diff.double(), M),
            "grad shape": lambda: R.gram_loss_backward(torch.ones(3), fs, ft, diff, M),
            "grad dtype": lambda: R.gram_loss_backward(torch.tensor(1), fs, ft, diff, M),
            "dtypes": lambda: R.gram_loss_backward(one, fs, ft.double(), diff, M),
            "3-D": lambda: R.gram_loss_backward(one, fs[0], ft, diff, M),
        }
    elif op == "kd":
        M = [True, False]
        cases = {
            "issue 16 shapes": lambda: R.kd_logits_loss_backward(one, big, small, 4.0, M),
            "issue 16 shapes swapped": lambda: R.kd_logits_loss_backward(one, small, big, 4.0, M),
            "classes": lambda: R.kd_logits_loss_backward(one, fs, rnd(2, 5, 4, 4), 4.0, M),
            "T=0": lambda: R.kd_logits_loss_backward(one, fs, ft, 0.0, M),
            "T<0": lambda: R.kd_logits_loss_backward(one, fs, ft, -2.0, M),
            "T=nan": lambda: R.kd_logits_loss_backward(one, fs, ft, float("nan"), M),
            "T=inf": lambda: R.kd_logits_loss_backward(one, fs, ft, float("inf"), M),
            "grad shape": lambda: R.kd_logits_loss_backward(torch.ones(2, 2), fs, ft, 4.0, M),
            "grad empty": lambda: R.kd_logits_loss_backward(torch.ones(0), fs, ft, 4.0, M),
            "dtypes": lambda: R.kd_logits_loss_backward(one, fs, ft.double(), 4.0, M),
            "int": lambda: R.kd_logits_loss_backward(one, fs.int(), ft.int(), 4.0, M),
            "half": lambda: R.kd_logits_loss_backward(one, fs.half(), ft.half(), 4.0, M),
        }
    elif op == "cwd":
        stats = R.cwd_loss(fs, ft, 1.0, True)[1]
        def bwd(grad=one, a=fs, b=ft, s=stats, t=1.0, mask=(True, False)):
            return R.cwd_loss_backward(grad, a, b, s, t, list(mask))
        cases = {
            "issue 16 shapes": lambda: bwd(a=big, b=small),
            "issue 16 shapes swapped": lambda: bwd(a=small, b=big),
            "stats of another size": lambda: bwd(a=big, b=big),
            "channels": lambda: bwd(b=rnd(2, 5, 4, 4)),
            "stats shape": lambda: bwd(s=stats[:, :, :2]),
            "stats of another batch": lambda: bwd(s=stats[:1]),
            "stats dtype": lambda: bwd(s=stats.float()),
            "T=0": lambda: bwd(t=0.0),
            "T<0": lambda: bwd(t=-2.0),
            "T=nan": lambda: bwd(t=float("nan")),
            "T=inf": lambda: bwd(t=float("inf")),
            "grad shape": lambda: bwd(grad=torch.ones(2, 2)),
            "grad empty": lambda: bwd(grad=torch.ones(0)),
            "dtypes": lambda: bwd(b=ft.double()),
            "int": lambda: bwd(a=fs.int(), b=ft.int()),
            "half": lambda: bwd(a=fs.half(), b=ft.half()),
            "stats shape, teacher gradient only": lambda: bwd(s=stats[:, :, :2], mask=(False, True)),
            "T=0, no gradient asked for": lambda: bwd(t=0.0, mask=(False, False)),
        }
    elif op == "rkl":
        stats = R.relation_kl_loss(fs, ft, 1.0, 1e-12, True)[1]
        def bwd(grad=one, a=fs, b=ft, s=stats, t=1.0, eps=1e-12, mask=(True, True)):
            return R.relation_kl_loss_backward(grad, a, b, s, t, eps, list(mask))
        cases = {
            "teacher of another batch": lambda: bwd(b=rnd(3, 3, 4, 4)),
            "spatial": lambda: bwd(b=ft[..., :2]),
            "issue 16 shapes": lambda: bwd(a=big, b=small),
            "stats of another size": lambda: bwd(a=big, b=big),
            "stats shape": lambda: bwd(s=stats[:, :2]),
            "stats dtype": lambda: bwd(s=stats.float()),
            "T=0": lambda: bwd(t=0.0),
            "T<0": lambda: bwd(t=-1.0),
            "T=nan": lambda: bwd(t=float("nan")),
            "eps=0": lambda: bwd(eps=0.0),
            "grad shape": lambda: bwd(grad=torch.ones(4)),
            "grad shape, student gradient only": lambda: bwd(grad=torch.ones(4), mask=(True, False)),
            "stats shape, teacher gradient only": lambda: bwd(s=stats[:, :2], mask=(False, True)),
            "T=0, no gradient asked for": lambda: bwd(t=0.0, mask=(False, False)),
        }
    else:
        labels = y.clone(); labels[:, 0] = 1
        M = [True, False]
        out = R.affinity_loss(fs, ft, labels, 2, 1.0, 1.0, 1e-12, True)
        plain = R.affinity_loss(fs, ft, None, 1, 1.0, 1.0, 1e-12, True)
        s1, s2, s3, counts = out[1:]
        def bwd(grad=one, a=fs, b=ft, lab=labels, s=(s1, s2, s3), c=counts, w=(1.0, 1.0), eps=1e-12):
            return R.affinity_loss_backward(grad, a, b, lab, *s, c, *w, eps, M)
        cases = {
            "issue 16 shapes": lambda: bwd(a=big, b=small),
            "labels of another class count": lambda: bwd(lab=torch.full_like(labels, 7)),
            "labels negative": lambda: bwd(lab=-labels),
            "labels shape": lambda: bwd(lab=labels[:1]),
            "labels dtype": lambda: bwd(lab=labels.int()),
            "no labels, class counts": lambda: bwd(lab=None),
            "stats without labels, labels given": lambda: bwd(s=plain[1:4], c=plain[4]),
            "counts dims": lambda: bwd(c=counts[0]),
            "counts dtype": lambda: bwd(c=counts.float()),
            "s1 shape": lambda: bwd(s=(s1[:, :, :2], s2, s3)),
            "s2 dtype": lambda: bwd(s=(s1, s2.double(), s3)),
            "s3 of another batch": lambda: bwd(s=(s1, s2, s3[:1])),
            "teacher channels": lambda: bwd(b=rnd(2, 5, 4, 4)),
            "batch": lambda: bwd(b=ft[:1]),
            "weight nan": lambda: bwd(w=(float("nan"), 1.0)),
            "weight < 0": lambda: bwd(w=(1.0, -1.0)),
            "eps=0": lambda: bwd(eps=0.0),
            "grad shape": lambda: bwd(grad=torch.ones(2)),
        }
    for name, call in cases.items():
        print(json.dumps({"case": name, "started": True}), flush=True)
        try:
            call()
            result = {"case": name, "error": None}
        except Exception as exc:
            result = {"case": name, "error": type(exc).__name__, "message": str(exc).splitlines()[0]}
        print(json.dumps(result), flush=True)
    """
)

BACKWARD_OPS = {
    "gram": "gram_loss_backward",
    "kd": "kd_logits_loss_backward",
    "cwd": "cwd_loss_backward",
    "rkl": "relation_kl_loss_backward",
    "affinity": "affinity_loss_backward",
}


@pytest.mark.parametrize("op", list(BACKWARD_OPS))
def test_backward_ops_reject_arguments_that_do_not_belong_together(op):
    proc = subprocess.run(
        [sys.executable, "-c", BACKWARD_SCRIPT, op],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    last = lines[-1]["case"] if lines else "(before the first case)"
    assert proc.returncode == 0, (
        f"{op}: the process died (rc {proc.returncode}) in case {last!r}: {proc.stderr[-2000:]}"
    )
    results = [r for r in lines if "started" not in r]
    assert results
    for r in results:
        assert r["error"] in ("ValueError", "TypeError"), r
        assert r["message"].startswith(f"{BACKWARD_OPS[op]}: "), r
