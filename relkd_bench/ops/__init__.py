"""Fused relation-KD losses as torch custom ops (``torch.ops.relkd.*``), with pure-PyTorch references.

Each op module holds the readable reference (the spec and test oracle), the public function that
dispatches to the native kernels, and the fake/autograd registrations. Imports only torch.
"""

from . import affinity, cwd, gram, kd_logits, relation_kl
from ._backend import backend, cpu_kernels, native_available, native_has_cuda, set_backend
from .affinity import affinity_loss, affinity_loss_dual, affinity_loss_reference
from .cwd import cwd_loss, cwd_loss_reference
from .gram import gram_loss, gram_loss_reference
from .kd_logits import kd_logits_loss, kd_logits_loss_reference
from .relation_kl import relation_kl_loss, relation_kl_loss_reference

if native_available():
    for _module in (gram, affinity, kd_logits, relation_kl, cwd):
        _module._register()

__all__ = [
    "affinity_loss",
    "affinity_loss_dual",
    "affinity_loss_reference",
    "backend",
    "cpu_kernels",
    "cwd_loss",
    "cwd_loss_reference",
    "gram_loss",
    "gram_loss_reference",
    "kd_logits_loss",
    "kd_logits_loss_reference",
    "native_available",
    "native_has_cuda",
    "relation_kl_loss",
    "relation_kl_loss_reference",
    "set_backend",
]
