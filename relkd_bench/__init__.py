"""relkd-bench: relation-based knowledge distillation for multi-site prostate MRI segmentation.

The flow is one straight line: data -> models -> ops/losses -> engine -> ablate -> report.
Nothing earlier in the line imports anything later.
"""

__version__ = "0.1.0"
