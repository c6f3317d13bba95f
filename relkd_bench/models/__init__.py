"""Teachers, students, feature taps and the efficiency profile's model side.

Build by name::

    from relkd_bench.models import build_model, list_models
    student = build_model("enet")                     # in_channels=1, num_classes=2
    logits, feats = student.forward_features(x)       # feats: {"encoder": ..., "decoder": ...}

Students: ``enet``, ``erfnet``, ``espnet`` (H, W multiples of 8). Teachers: ``unet_wide`` (16),
``segresnet`` (8), ``dynunet`` (16), ``teacher_ensemble``.
"""

from relkd_bench.models.base import SegModel, TapSpec
from relkd_bench.models.enet import ENet
from relkd_bench.models.ensemble import TeacherEnsemble, teacher_ensemble
from relkd_bench.models.erfnet import ERFNet
from relkd_bench.models.espnet import ESPNet
from relkd_bench.models.registry import build_model, list_models, model_role, register_model
from relkd_bench.models.taps import FeatureTap
from relkd_bench.models.teachers import DynUNetTeacher, SegResNetTeacher, UNetTeacher

__all__ = [
    "DynUNetTeacher",
    "ENet",
    "ERFNet",
    "ESPNet",
    "FeatureTap",
    "SegModel",
    "SegResNetTeacher",
    "TapSpec",
    "TeacherEnsemble",
    "UNetTeacher",
    "build_model",
    "list_models",
    "model_role",
    "register_model",
    "teacher_ensemble",
]
