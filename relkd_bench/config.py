"""Declarative experiment configuration: YAML presets → a frozen dataclass tree.

Typical use::

    from relkd_bench.config import config_hash, load_config

    cfg = load_config("quick", ["train.seed=1", "distill.aa_variant=class_aware"])
    cfg = load_config("my.yaml", {"distill.lambda_logits": 0.0})
    cfg.distill.lambda_aa, cfg.to_dict(), config_hash(cfg)

Presets live in ``relkd_bench/presets/<name>.yaml``. A YAML file may start from a preset with a
top-level ``base: quick`` key. Every key must be known: an unknown key in a file or an override raises
``ValueError`` naming the key (and the file). Override values given as strings are parsed as YAML
(``"train.epochs=3"`` → 3, ``"distill.km_pairs=[[encoder, encoder]]"`` → a list).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "AA_ALIGN_MODES",
    "AA_LABELS",
    "AA_VARIANTS",
    "LOGITS_VARIANTS",
    "ALIGN_MODES",
    "AUGMENT_LEVELS",
    "DataConfig",
    "DistillConfig",
    "ExperimentConfig",
    "ModelConfig",
    "RunConfig",
    "SynthSection",
    "TrainConfig",
    "augment_level",
    "config_hash",
    "list_presets",
    "load_config",
    "preset_path",
    "teacher_hash",
]

AA_VARIANTS = ("cosine", "class_aware", "relation_kl", "skd")
#: The logits term: pixel-wise KD (plain pixel mean, or averaged per ground-truth class) or CWD.
LOGITS_VARIANTS = ("kd", "kd_balanced", "cwd")
AA_LABELS = ("gt", "teacher")
#: How AAM brings a feature pair to one H, W (the affinity ops need equal sizes, so no "none").
AA_ALIGN_MODES = ("resize_teacher", "resize_student", "pool")
#: KMM's modes: the AAM ones plus "none" (Gram matrices allow different sizes).
ALIGN_MODES = (*AA_ALIGN_MODES, "none")
DEVICES = ("auto", "cpu", "cuda")
AUGMENT_LEVELS = ("none", "standard", "bigaug")  # relkd_bench.data.augment.build_transforms builds each
PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class SynthSection:
    """Synthetic collection parameters (used when ``data.root == "synthetic"``)."""

    cases_per_site: int = 6
    size: int = 96
    slices: int = 20
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Data and leave-one-site-out protocol.

    Attributes:
        root: collection root (one sub-folder per site), or ``"synthetic"``: the generated collection
            ``<parent of run.workdir>/data/synthetic-c<cases>-s<size>-z<slices>-r<seed>``, written on
            first use (:func:`relkd_bench.engine.data_root`).
        synthetic: generator parameters of the synthetic collection.
        size: in-plane size ``H = W`` fed to the models.
        inplane_spacing: ``None`` → each slice resized to ``size`` (whole field of view); a value in mm →
            resampled to that spacing and centre-cropped/padded to ``size`` (same gland size at every site).
        context_slices: adjacent slices as input channels (odd).
        normalize: ``"zscore"`` or ``"percentile"``.
        empty_fraction: fraction of slices without prostate sampled per training epoch.
        heldout: the left-out site (any alias).
        val_fraction: case-level validation fraction of each source site.
        split_seed: seed of the validation draw.
        augment: training augmentation of both roles unless ``teacher.augment`` / ``student.augment``
            say otherwise: ``none`` | ``standard`` | ``bigaug`` (:data:`AUGMENT_LEVELS`, see
            :mod:`relkd_bench.data.augment`); ``true`` = ``standard`` and ``false`` = ``none`` (so a config
            that switches augmentation on or off keeps its meaning).
        cache_dir: preprocessed-volume cache; ``None`` → ``<parent of run.workdir>/cache``.
        num_classes: classes of the task, background included (the models' outputs); 2 = background and
            gland. MSD Task05 zones (imported with ``--keep-zones``): 3, with the default label map.
        label_map: mask value → class, e.g. ``{1: 1, 2: 2}`` (:mod:`relkd_bench.data.labels`: value 0 is
            background unless listed, an unlisted non-zero value is an error); empty → the default for
            ``num_classes``: 2 classes: any value > 0 → 1 (zones merged into the gland); more: value v →
            class v. See :meth:`label_pairs`.
    """

    root: str = "synthetic"
    synthetic: SynthSection = field(default_factory=SynthSection)
    size: int = 96
    inplane_spacing: float | None = None
    context_slices: int = 1
    normalize: str = "zscore"
    empty_fraction: float = 0.2
    heldout: str = "BIDMC"
    val_fraction: float = 0.2
    split_seed: int = 0
    augment: bool | str = True
    cache_dir: str | None = None
    num_classes: int = 2
    label_map: dict = field(default_factory=dict)

    def label_pairs(self) -> tuple[tuple[int, int], ...] | None:
        """The label map as sorted ``(mask value, class)`` pairs; ``None`` = binary (mask > 0 → 1)."""
        if self.label_map:
            return tuple(sorted((int(v), int(c)) for v, c in self.label_map.items()))
        if self.num_classes == 2:
            return None
        return tuple((v, v) for v in range(1, self.num_classes))


@dataclass(frozen=True)
class ModelConfig:
    """A registered model (``relkd_bench.models.build_model(name, **kwargs)``) and its own schedule.

    Attributes:
        name: registry name.
        kwargs: constructor arguments (``in_channels``/``num_classes`` are set by the engine).
        epochs: epochs for this model; ``None`` → ``train.epochs``.
        lr: learning rate; ``None`` → ``train.lr``.
        augment: this model's training augmentation, ``none`` | ``standard`` | ``bigaug``; ``None`` →
            ``data.augment``. Part of the teacher's identity (:func:`teacher_hash`).
        members: teacher only: > 1 trains that many copies independently (member i with seed
            ``s + 1000·i``, s the teacher's seed; member 0 is the single teacher) and distils from the mean
            of their logits and features, a deep ensemble (:mod:`relkd_bench.engine.teacher_ensemble`).
        seed: teacher only: its training seed; ``None`` → ``train.seed``. A fixed value gives one
            teacher per fold, shared by students of every seed (the usual protocol).
    """

    name: str = "enet"
    kwargs: dict = field(default_factory=dict)
    epochs: int | None = None
    lr: float | None = None
    augment: str | None = None
    members: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class DistillConfig:
    """The RelKD objective ``L = L_seg + λ1·L_logits + λ2·L_KM + λ3·L_AA`` (a λ of 0 disables its term).

    Attributes:
        lambda_logits, lambda_km, lambda_aa: λ1, λ2, λ3.
        temperature: logits-KD temperature T (τ of ``cwd``).
        logits_variant: the λ1 term (:mod:`relkd_bench.losses`): ``kd`` (pixel-wise softened KL, pixel
            mean), ``kd_balanced`` (the same KL averaged per ground-truth class, then over classes) or
            ``cwd`` (channel-wise distillation of the logits, Shu et al. 2021). Default ``kd_balanced``:
            with the plain pixel mean a 1–2 % foreground leaves the term almost all background, and at
            T = 4 it held students at all-background (issue 13; :func:`relkd_bench.losses.class_balanced_kd`).
        km_align: spatial alignment of KMM pairs (Gram matrices allow different sizes: ``"none"``).
        aa_variant: ``cosine`` | ``class_aware`` | ``relation_kl`` | ``skd`` (SKD pairwise: cosine
            affinities of max-pooled features, ``aa_pool`` = SKD's node size β).
        aa_pool: average-pooling factor applied to AAM features (after alignment).
        aa_temperature: τ of ``relation_kl``.
        intra_weight, inter_weight: pair weights of ``class_aware``.
        aa_labels: ``gt`` (down-sampled ground truth) or ``teacher`` (teacher argmax) for ``class_aware``.
        aa_align: ``resize_teacher`` | ``resize_student`` | ``pool`` (AAM needs equal H, W).
        km_pairs, aa_pairs: ``[[student_tap, teacher_tap], ...]``; empty → per-architecture defaults
            (see :func:`relkd_bench.losses.default_pairs`).
    """

    lambda_logits: float = 0.0
    lambda_km: float = 0.0
    lambda_aa: float = 0.0
    temperature: float = 4.0
    logits_variant: str = "kd_balanced"
    km_align: str = "none"
    aa_variant: str = "class_aware"
    aa_pool: int = 1
    aa_temperature: float = 1.0
    intra_weight: float = 1.0
    inter_weight: float = 1.0
    aa_labels: str = "gt"
    aa_align: str = "resize_teacher"
    km_pairs: tuple = ()
    aa_pairs: tuple = ()

    @property
    def enabled(self) -> bool:
        """Whether any distillation term is active (a teacher is needed)."""
        return self.lambda_logits > 0 or self.lambda_km > 0 or self.lambda_aa > 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimization and runtime.

    Attributes:
        epochs, batch_size, lr, weight_decay: Adam(W) schedule with cosine decay over the epochs.
        seed: seeds python/numpy/torch, the loaders and the augmentation.
        device: ``auto`` | ``cpu`` | ``cuda``; amp: mixed precision (CUDA only).
        num_workers: DataLoader workers (0 keeps CPU runs deterministic and cheap).
        max_steps_per_epoch: cap on optimizer steps per epoch (0 = whole epoch).
        threads: ``torch.set_num_threads`` (0 = leave torch's default).
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)``.
        eval_batch_size: slices per forward pass in evaluation.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    max_steps_per_epoch: int = 0
    threads: int = 0
    deterministic: bool = True
    eval_batch_size: int = 32


@dataclass(frozen=True)
class RunConfig:
    """Where runs are written."""

    workdir: str = "runs/quick"


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(name="unet_wide"))
    student: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe nested dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


# -- building ----------------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _freeze(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _freeze(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return _coerce(value, kinds[0], key, where)
        for a in kinds:  # several types (e.g. bool | str): the first that accepts the value
            try:
                return _coerce(value, a, key, where)
            except ValueError:
                pass
        names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
        raise ValueError(f"{where}: {key} must be {' or '.join(names.get(a, str(a)) for a in kinds)}, "
                         f"got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float)
                                                                      and value.is_integer())):
            raise ValueError(f"{where}: {key} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: {key} must be a mapping, got {value!r}")
        return dict(_freeze(value))
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: {key} must be a list, got {value!r}")
        return _freeze(value)
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"{where}: unknown config key {dotted!r}; known keys in this section: "
                             f"{', '.join(sorted(names))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: {dotted} must be a mapping, got {value!r}")
            kwargs[key] = _build(hint, value, f"{dotted}.", where)
        else:
            kwargs[key] = _coerce(value, hint, dotted, where)
    return cls(**kwargs)


def _merge(base: dict, update: Mapping[str, Any]) -> dict:
    """Deep-merge ``update`` into a copy of ``base``: mappings merge key by key (a ``kwargs`` mapping keeps
    the base's other keys), any other value replaces the base's."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(tree: dict, dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"{where}: unknown config key {dotted!r} ({p!r} is not a section)")
        node = nxt
    node[parts[-1]] = value


def _parse_overrides(overrides: Mapping[str, Any] | Sequence[str]) -> list[tuple[str, Any]]:
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    items = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override must look like 'section.key=value', got {item!r}")
        key, raw = item.split("=", 1)
        items.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return items


def list_presets() -> list[str]:
    """Names of the packaged presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """Path of the packaged preset ``name``."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(list_presets())} "
                         "(or give a YAML path)")
    return path


def _read_yaml(source: str | Path, seen: tuple[Path, ...] = ()) -> tuple[dict, str]:
    path = Path(source)
    if not path.suffix and not path.exists():
        path = preset_path(str(source))
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: circular 'base:' chain")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    # check keys against the schema before merging, so the error names this file
    _build(ExperimentConfig, data, "", str(path))
    if base is not None:
        base_dict, _ = _read_yaml(base if Path(str(base)).suffix == "" else path.parent / str(base),
                                  (*seen, path))
        data = _merge(base_dict, data)
    return data, str(path)


def _validate(cfg: ExperimentConfig, where: str) -> None:
    d, t = cfg.distill, cfg.train

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"{where}: {msg}")

    for key, allowed in (("aa_variant", AA_VARIANTS), ("logits_variant", LOGITS_VARIANTS),
                         ("aa_labels", AA_LABELS), ("aa_align", AA_ALIGN_MODES),
                         ("km_align", ALIGN_MODES)):
        value = getattr(d, key)
        need(value in allowed, f"distill.{key} must be one of {allowed}, got {value!r}")
    for name in ("lambda_logits", "lambda_km", "lambda_aa", "intra_weight", "inter_weight"):
        need(getattr(d, name) >= 0, f"distill.{name} must be >= 0, got {getattr(d, name)}")
    need(d.temperature > 0 and d.aa_temperature > 0, "distill temperatures must be > 0")
    need(d.aa_pool >= 1, f"distill.aa_pool must be >= 1, got {d.aa_pool}")
    for name in ("km_pairs", "aa_pairs"):
        for pair in getattr(d, name):
            need(isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair),
                 f"distill.{name} entries must be [student_tap, teacher_tap], got {pair!r}")
    need(t.device in DEVICES, f"train.device must be one of {DEVICES}, got {t.device!r}")
    need(t.epochs >= 1 and t.batch_size >= 1 and t.lr > 0, "train.epochs, batch_size and lr must be positive")
    need(t.max_steps_per_epoch >= 0 and t.num_workers >= 0 and t.threads >= 0,
         "train.max_steps_per_epoch, num_workers and threads must be >= 0")
    for m in ("teacher", "student"):
        mc = getattr(cfg, m)
        need(mc.epochs is None or mc.epochs >= 1, f"{m}.epochs must be >= 1")
        need(mc.lr is None or mc.lr > 0, f"{m}.lr must be > 0")
        need(mc.members >= 1, f"{m}.members must be >= 1, got {mc.members}")
        need(mc.augment is None or mc.augment in AUGMENT_LEVELS,
             f"{m}.augment must be null (= data.augment) or one of {AUGMENT_LEVELS}, got {mc.augment!r}")
    need(cfg.student.members == 1, "student.members is not a setting: one student is trained")
    need(cfg.teacher.members == 1 or cfg.teacher.name != "teacher_ensemble",
         "teacher.members > 1 needs a single-model teacher.name, not teacher_ensemble")
    aug = cfg.data.augment
    need(isinstance(aug, bool) or aug in AUGMENT_LEVELS,
         f"data.augment must be true/false or one of {AUGMENT_LEVELS}, got {aug!r}")
    need(cfg.student.seed is None, "student.seed is not a setting: the student trains with train.seed")
    need(0.0 <= cfg.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)")
    need(cfg.data.context_slices >= 1 and cfg.data.context_slices % 2 == 1, "data.context_slices must be odd")
    _validate_labels(cfg.data, need)


def _validate_labels(data: DataConfig, need: Callable[[bool, str], None]) -> None:
    k = data.num_classes
    need(2 <= k <= 255, f"data.num_classes must be in [2, 255] (background included), got {k}")
    for value, cls in data.label_map.items():
        need(str(value).isdigit() and isinstance(cls, int) and not isinstance(cls, bool),
             f"data.label_map maps mask values (integers >= 0) to classes (integers), got {value!r}: {cls!r}")
        need(0 <= cls < k, f"data.label_map: mask value {value} -> class {cls}, outside [0, {k}) "
                           f"(data.num_classes={k})")


def load_config(source: str | Path | Mapping[str, Any] = "quick",
                overrides: Mapping[str, Any] | Sequence[str] = ()) -> ExperimentConfig:
    """Load a preset name, a YAML path or a dict, then apply dotted-key ``overrides``.

    Args:
        source: ``"quick"``, ``"paper"``, a YAML path, or a nested dict (may carry ``base: <preset>``).
        overrides: ``{"train.seed": 1}`` or ``["train.seed=1", ...]`` (values parsed as YAML).

    Raises:
        ValueError: unknown key (named, with the file), wrong type or invalid value.
    """
    if isinstance(source, Mapping):
        data = dict(source)
        base = data.pop("base", None)
        where = "<dict>"
        _build(ExperimentConfig, data, "", where)
        if base is not None:
            data = _merge(_read_yaml(base)[0], data)
    else:
        data, where = _read_yaml(source)
    data = json.loads(json.dumps(_plain(data)))  # deep copy
    items = _parse_overrides(overrides)
    for key, value in items:
        _set_dotted(data, key, _plain(value), f"{where} (override {key})")
    cfg = _build(ExperimentConfig, data, "", where if not items else f"{where} + overrides")
    _validate(cfg, where)
    return cfg


def _digest(d: Any) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def augment_level(cfg: ExperimentConfig, role: str) -> str:
    """The augmentation level (:data:`AUGMENT_LEVELS`) that ``role`` (``teacher``/``student``) trains
    with: ``<role>.augment``, else ``data.augment`` (``true`` → ``standard``, ``false`` → ``none``)."""
    own = getattr(cfg, role).augment
    if own is not None:
        return own
    aug = cfg.data.augment
    return aug if isinstance(aug, str) else ("standard" if aug else "none")


def _hashed_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """``cfg.to_dict()`` without the settings that were added later and are at their default (a binary
    task's ``data.num_classes`` and ``data.label_map``), so configs written before they existed keep
    their hash, run folders and teachers."""
    d = cfg.to_dict()
    if cfg.data.num_classes == 2 and not cfg.data.label_map:
        del d["data"]["num_classes"], d["data"]["label_map"]
    return d


def config_hash(cfg: ExperimentConfig) -> str:
    """Stable 12-hex-digit hash of ``cfg.to_dict()`` (sorted keys; see :func:`_hashed_dict`)."""
    return _digest(_hashed_dict(cfg))


def teacher_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` as the teacher trains it: ``train.seed`` replaced by ``teacher.seed`` when that is set."""
    if cfg.teacher.seed is None:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.teacher.seed))


def teacher_hash(cfg: ExperimentConfig) -> str:
    """Hash of what determines the teacher: data (minus the cache folder), teacher, training knobs.

    The teacher's augmentation enters once, resolved (:func:`augment_level`), in place of
    ``data.augment``: equal recipes share a teacher, and a student never reuses a teacher trained with
    another recipe. ``standard``/``none`` are written as ``true``/``false``, as ``data.augment`` was
    before the levels existed, so earlier teachers keep their hash and folder.

    Student, distillation, device and worker settings do not enter, so student runs that differ only
    in those share one teacher (and, with ``teacher.seed`` set, student runs of every seed).
    """
    cfg = teacher_config(cfg)
    d = _hashed_dict(cfg)
    data = {k: v for k, v in d["data"].items() if k != "cache_dir"}
    level = augment_level(cfg, "teacher")
    data["augment"] = {"standard": True, "none": False}.get(level, level)
    del d["teacher"]["augment"]  # entered above, resolved
    if d["teacher"]["members"] == 1:  # a single teacher hashes as before the key existed
        del d["teacher"]["members"]
    train = {k: v for k, v in d["train"].items()
             if k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "max_steps_per_epoch", "amp")}
    if cfg.teacher.epochs is not None:
        train.pop("epochs")
    if cfg.teacher.lr is not None:
        train.pop("lr")
    teacher = {k: v for k, v in d["teacher"].items() if k != "seed"}  # the seed is train.seed here
    return _digest({"data": data, "teacher": teacher, "train": train})
