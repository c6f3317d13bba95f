"""Build models by name (torchdistill-style registry).

Example::

    from relkd_bench.models import build_model, list_models

    student = build_model("enet", in_channels=1, num_classes=2)
    teacher = build_model("unet_wide")
    list_models()          # ['dynunet', 'enet', 'erfnet', ...]
    list_models("student") # ['enet', 'erfnet', 'espnet']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["build_model", "list_models", "model_role", "register_model"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_ROLES: dict[str, str] = {}
_ROLES_ALLOWED = ("student", "teacher")


def register_model(name: str | None = None, *, role: str) -> Callable[[_F], _F]:
    """Class/function decorator that registers a model constructor under ``name``.

    Args:
        name: registry key (lower case); defaults to the decorated object's ``__name__`` lower-cased.
        role: ``"student"`` or ``"teacher"`` (used by the profile and by ``list_models(role)``).

    Raises:
        ValueError: if ``name`` is already registered or ``role`` is unknown.
    """
    if role not in _ROLES_ALLOWED:
        raise ValueError(f"role must be one of {_ROLES_ALLOWED}, got {role!r}")

    def deco(fn: _F) -> _F:
        key = (name or fn.__name__).lower()
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = fn
        _ROLES[key] = role
        return fn

    return deco


def list_models(role: str | None = None) -> list[str]:
    """Sorted registered names, optionally only those with the given ``role``."""
    return sorted(k for k in _REGISTRY if role is None or _ROLES[k] == role)


def model_role(name: str) -> str:
    """``"student"`` or ``"teacher"`` for a registered name."""
    _check_known(name)
    return _ROLES[name.lower()]


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the model registered as ``name`` with ``kwargs``.

    Raises:
        ValueError: if ``name`` is not registered; the message lists the known names.
    """
    _check_known(name)
    return _REGISTRY[name.lower()](**kwargs)


def _check_known(name: str) -> None:
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
