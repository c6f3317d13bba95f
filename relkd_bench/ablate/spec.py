"""Declarative ablation specs: ``ablations/<name>.yaml`` → a validated :class:`AblationSpec`.

A spec names a base experiment config (preset or YAML path) plus dotted overrides, a sampler and its
space, and the harness knobs. Every key is checked: an unknown key is a ``ValueError`` naming the key
and the file. See ``ablations/modules.yaml`` for a commented example.

Parameter names are dotted config keys (``distill.temperature``) or one of the shorthands
``modules`` (a module set such as ``LM+KM``; sets λ1…λ3), ``method`` (a named method of
:data:`METHODS` such as ``SKD``, a method the spec defines under ``methods:``, or a module set; see
``ablations/methods.yaml`` and ``ablations/loss_weights_eval.yaml``), ``seed``
(``train.seed``), ``heldout`` (``data.heldout``) and ``student`` (``student.name``). A grid has at most
one of ``modules`` and ``method``; its values are the labels the report's tables show.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ALIASES",
    "BASELINE",
    "METHODS",
    "MODULES",
    "MODULE_SETS",
    "TEACHER",
    "AblationSpec",
    "ParamSpec",
    "canonical_method",
    "canonical_modules",
    "cell_key",
    "is_baseline",
    "load_spec",
    "method_overrides",
    "spec_from_dict",
]

MODULES = {"LM": "distill.lambda_logits", "KM": "distill.lambda_km", "AA": "distill.lambda_aa"}
MODULE_SETS = ("none", "LM", "KM", "AA", "LM+KM", "LM+AA", "KM+AA", "LM+KM+AA")
ALIASES = {"seed": "train.seed", "heldout": "data.heldout", "student": "student.name"}
#: The grid's method axis names (``modules`` takes module sets only, ``method`` also named methods).
MODULE_AXES = ("modules", "method")
TEACHER = "teacher"
BASELINE = "no-KD"
RELKD = "RelKD"
#: Named methods for the ``method`` axis: config overrides applied on top of the spec's base config and
#: overrides, with every λ first set to 0. Settings not given are the base config's (quick: ENet student,
#: ``unet_wide`` teacher, student taps of :func:`relkd_bench.losses.default_pairs`).
#:
#: * ``teacher``: no student; the trial scores the teacher the KD trials of its cell distil from
#:   (trained once and cached; a preset with ``teacher.seed`` set shares one teacher across seeds).
#: * ``no-KD``: the student with L_seg only (the baseline every comparison is against).
#: * ``KD``: pixel-wise logits KD, Hinton et al. 2015, as the segmentation baselines use it (SKD, CIRKD):
#:   plain pixel mean of the KL, T = 1, λ = 1.
#: * ``SKD``: SKD's pair-wise term (Liu et al., CVPR 2019): cosine affinities of 2×2 max-pooled decoder
#:   features, λ = 10 (the paper's λ1).
#: * ``CIRKD``: CIRKD's pixel-to-pixel relations within each image (Yang et al., CVPR 2022): softmax
#:   relations of the decoder features at τ = 0.1 (CIRKD's), KL with τ², λ = 1 (``relation_kl``).
#: * ``CWD``: channel-wise distillation of the logits (Shu et al., ICCV 2021): τ = 1, λ = 3 (the
#:   authors' released segmentation configs use τ = 1 and weights 3–10 on the logits).
#: * ``RelKD``: this project's method, LM+KM+AA with the spec's module weights and the base's variants.
METHODS: dict[str, dict[str, Any]] = {
    TEACHER: {},
    BASELINE: {},
    "KD": {"distill.lambda_logits": 1.0, "distill.logits_variant": "kd", "distill.temperature": 1.0},
    "SKD": {"distill.lambda_aa": 10.0, "distill.aa_variant": "skd", "distill.aa_pool": 2},
    "CIRKD": {"distill.lambda_aa": 1.0, "distill.aa_variant": "relation_kl", "distill.aa_pool": 1,
              "distill.aa_temperature": 0.1},
    "CWD": {"distill.lambda_logits": 3.0, "distill.logits_variant": "cwd", "distill.temperature": 1.0},
    RELKD: {},
}
OBJECTIVES = ("engine", "smoke")
SAMPLERS = ("grid", "tpe")
PRUNERS = ("none", "median")
PARAM_TYPES = ("float", "int", "categorical")


def canonical_modules(label: str) -> str:
    """``"km+lm"`` → ``"LM+KM"``; ``"none"``/``""`` → ``"none"``. Raises ``ValueError`` on an unknown part."""
    parts = [p.strip().upper() for p in str(label).replace(",", "+").split("+") if p.strip()]
    if not parts or parts == ["NONE"]:
        return "none"
    bad = [p for p in parts if p not in MODULES]
    if bad:
        raise ValueError(f"unknown module {bad[0]!r} in module set {label!r}; modules: LM, KM, AA or none")
    return "+".join(m for m in MODULES if m in parts)


def canonical_method(label: str, methods: Mapping[str, Any] = METHODS) -> str:
    """A name of ``methods`` (default :data:`METHODS`; a spec passes its :attr:`AblationSpec.all_methods`)
    in its canonical spelling (case-insensitive), else the canonical module set (:func:`canonical_modules`,
    which raises ``ValueError`` naming the known methods)."""
    for name in methods:
        if str(label).strip().lower() == name.lower():
            return name
    try:
        return canonical_modules(label)
    except ValueError:
        raise ValueError(f"unknown method {label!r}: a module set (LM, KM, AA joined by '+', or none) or one "
                         f"of {', '.join(methods)}") from None


def is_baseline(label: str, methods: Mapping[str, Any] = METHODS) -> bool:
    """Whether a module-axis value is the no-KD baseline (``none`` or ``no-KD``)."""
    return canonical_method(label, methods) in ("none", BASELINE)


def method_overrides(label: str, module_weights: Mapping[str, float],
                     methods: Mapping[str, Mapping[str, Any]] = METHODS) -> dict[str, Any]:
    """Config overrides of a module-axis value: a module set turns its λs on at ``module_weights``, a
    named method of ``methods`` sets every λ to 0 and then its entry (``RelKD``: LM+KM+AA)."""
    name = canonical_method(label, methods)
    if name in methods and name != RELKD:
        return {**{key: 0.0 for key in MODULES.values()}, **methods[name]}
    on = ("LM+KM+AA" if name == RELKD else name).split("+")
    return {key: (float(module_weights[m]) if m in on else 0.0) for m, key in MODULES.items()}


def cell_key(cell: Mapping[str, Any]) -> str:
    """Stable text key of a grid cell, e.g. ``"seed=0|heldout=BIDMC|modules=LM"``."""
    return "|".join(f"{k}={v}" for k, v in cell.items())


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter (``sampler: tpe``).

    Attributes:
        type: ``float`` | ``int`` | ``categorical``.
        low, high, log, step: numeric range (``log``: log-uniform).
        choices: categorical values.
        off_switch: add an explicit on/off switch parameter ``<name>:on``; off means the value 0 (a λ
            switched off). (Not ``off:``: YAML 1.1 reads a bare ``off`` as ``false``.)
        requires: only sampled when that earlier parameter's value is non-zero/true.
    """

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    off_switch: bool = False
    requires: str | None = None

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw this parameter from an ``optuna.Trial``."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.type == "int":
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass(frozen=True)
class AblationSpec:
    """A validated sweep definition (see the module docstring and ``ablations/*.yaml``)."""

    name: str
    source: str = "<dict>"
    description: str = ""
    base: str = "quick"
    overrides: dict = field(default_factory=dict)
    objective: str = "engine"
    sampler: str = "grid"
    grid: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    search_space: dict = field(default_factory=dict)
    module_weights: dict = field(default_factory=dict)
    n_trials: int | None = None
    timeout: float | None = None
    pruner: dict = field(default_factory=dict)
    max_retries: int = 1
    heartbeat: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def all_methods(self) -> dict[str, dict[str, Any]]:
        """:data:`METHODS` plus the methods this spec defines (``methods:``, e.g. tuned loss weights)."""
        return {**METHODS, **self.methods}

    @property
    def module_axis(self) -> str:
        """The grid axis holding module sets / methods: ``method`` when the grid has it, else ``modules``."""
        return "method" if "method" in self.grid else "modules"

    def cells(self) -> list[dict[str, Any]]:
        """Grid cells in run order: axes in YAML order, the module axis varying fastest, baseline first."""
        axis = self.module_axis
        axes = [a for a in self.grid if a != axis] + [axis]
        values = [self.grid[a] for a in axes]
        return [dict(zip(axes, combo)) for combo in itertools.product(*values)]

    @property
    def total(self) -> int:
        """Requested number of finished trials: grid cells, or ``n_trials`` for TPE."""
        n = len(self.cells()) if self.sampler == "grid" else int(self.n_trials or 0)
        return min(n, self.n_trials) if self.n_trials else n

    def pruner_kwargs(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.pruner.items() if k != "type"}


_TOP = {"name", "description", "base", "overrides", "objective", "sampler", "grid", "methods", "search_space",
        "module_weights", "n_trials", "timeout", "pruner", "max_retries", "heartbeat", "smoke", "seed"}
_PARAM = {"type", "low", "high", "log", "step", "choices", "off_switch", "requires"}
_PRUNER = {"type", "n_startup_trials", "n_warmup_steps", "interval_steps"}
_HEARTBEAT = {"interval", "grace"}
_SMOKE = {"seconds", "epochs"}


class _Check:
    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"{self.where}: {msg}")

    def keys(self, data: Any, allowed: set[str], section: str) -> dict:
        self(isinstance(data, Mapping), f"{section or 'top level'} must be a mapping, got {data!r}")
        for key in data:
            self(key in allowed, f"unknown key {f'{section}.' if section else ''}{key!s}; "
                                 f"known keys: {', '.join(sorted(allowed))}")
        return dict(data)


def _param(name: str, raw: Any, chk: _Check, earlier: list[str]) -> ParamSpec:
    d = chk.keys(raw, _PARAM, f"search_space.{name}")
    chk(d.get("type") in PARAM_TYPES, f"search_space.{name}.type must be one of {PARAM_TYPES}")
    if d["type"] == "categorical":
        chk(isinstance(d.get("choices"), list) and d["choices"],
            f"search_space.{name}.choices: a non-empty list")
        d["choices"] = tuple(d["choices"])
    else:
        chk(isinstance(d.get("low"), (int, float)) and isinstance(d.get("high"), (int, float))
            and d["low"] < d["high"], f"search_space.{name}: numeric low < high required")
        chk(not d.get("log") or d["low"] > 0, f"search_space.{name}: log scale needs low > 0")
    chk(not d.get("off_switch") or d["type"] == "float", f"search_space.{name}.off_switch: only for floats")
    req = d.get("requires")
    chk(req is None or req in earlier, f"search_space.{name}.requires must name an earlier parameter")
    return ParamSpec(**d)


def _check_config_keys(spec_d: dict, chk: _Check, base_dir: Path | None) -> dict[str, float]:
    """Validate the base config, overrides, parameter names and grid values; return the base λs."""
    from relkd_bench.config import load_config  # config is earlier in the flow

    base = spec_d.setdefault("base", "quick")
    if base_dir is not None and Path(str(base)).suffix:
        spec_d["base"] = base = str((base_dir / base).resolve())
    overrides = dict(spec_d["overrides"])
    try:
        cfg = load_config(base, overrides)
        for name, values in spec_d.get("grid", {}).items():
            if name not in MODULE_AXES:
                for value in values:
                    load_config(base, {**overrides, ALIASES.get(name, name): value})
            elif name == "method":
                methods = {**METHODS, **spec_d["methods"]}
                for value in values:
                    load_config(base, {**overrides, **method_overrides(value, {m: 1.0 for m in MODULES},
                                                                        methods)})
    except ValueError as exc:
        raise ValueError(f"{chk.where}: {exc}") from None
    for name in spec_d.get("search_space", {}):
        key, node = ALIASES.get(name, name), cfg
        for part in key.split("."):
            chk(hasattr(node, part), f"search_space: unknown config key {key!r}")
            node = getattr(node, part)
    d = cfg.distill
    return {"LM": d.lambda_logits, "KM": d.lambda_km, "AA": d.lambda_aa}


def _spec_methods(raw: Any, chk: _Check) -> dict[str, dict[str, Any]]:
    """Validate ``methods:``: new method names (not a built-in method or module set) mapped to dotted
    config overrides; their keys and values are checked against the base config with the grid."""
    methods = chk.keys(raw, set(raw or {}), "methods")
    for name, overrides in methods.items():
        chk(isinstance(name, str) and name.strip() == name and name, f"methods: bad method name {name!r}")
        clash = [m for m in METHODS if m.lower() == name.lower()]
        chk(not clash, f"methods.{name}: the built-in method {clash[0] if clash else ''!r} has that name")
        try:
            canonical_modules(name)
            is_module_set = True
        except ValueError:
            is_module_set = False
        chk(not is_module_set, f"methods.{name}: the name of a module set")
        chk(isinstance(overrides, Mapping) and overrides and all(isinstance(k, str) for k in overrides),
            f"methods.{name}: a non-empty mapping of dotted config keys to values")
    return {name: dict(overrides) for name, overrides in methods.items()}


def spec_from_dict(data: Mapping[str, Any], where: str = "<dict>", base_dir: Path | None = None,
                   check_config: bool = True) -> AblationSpec:
    """Validate a spec mapping (``where`` names the file in errors)."""
    chk = _Check(where)
    d = chk.keys(data, _TOP, "")
    chk(isinstance(d.get("name"), str) and d["name"].replace("-", "").replace("_", "").isalnum(),
        "name: a study name of letters, digits, '-' and '_' is required")
    chk(d.setdefault("objective", "engine") in OBJECTIVES, f"objective must be one of {OBJECTIVES}")
    chk(d.setdefault("sampler", "grid") in SAMPLERS, f"sampler must be one of {SAMPLERS}")
    chk(isinstance(d.setdefault("overrides", {}), Mapping), "overrides must be a mapping of dotted keys")
    for key in ("n_trials", "max_retries", "seed"):
        v = d.get(key)
        chk(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0), f"{key}: integer >= 0")
    pr = chk.keys(d.get("pruner", {}), _PRUNER, "pruner")
    pr.setdefault("type", "median" if d["sampler"] == "tpe" else "none")
    chk(pr["type"] in PRUNERS, f"pruner.type must be one of {PRUNERS}")
    d["pruner"] = pr
    hb = chk.keys(d.get("heartbeat", {}), _HEARTBEAT, "heartbeat")
    d["heartbeat"] = {"interval": float(hb.get("interval", 30)), "grace": float(hb.get("grace", 120))}
    chk(0 < d["heartbeat"]["interval"] < d["heartbeat"]["grace"], "heartbeat: 0 < interval < grace")
    d["smoke"] = chk.keys(d.get("smoke", {}), _SMOKE, "smoke")
    mw = chk.keys(d.get("module_weights", {}), set(MODULES), "module_weights")
    d["methods"] = _spec_methods(d.get("methods", {}), chk)
    if d["sampler"] == "grid":
        chk(not d.get("search_space"), "search_space is for sampler: tpe (use grid:)")
        grid = chk.keys(d.get("grid"), set(d.get("grid") or {}), "grid")
        for axis, values in grid.items():
            chk(isinstance(values, list) and values and len(set(map(str, values))) == len(values),
                f"grid.{axis}: a non-empty list of distinct values")
            chk(all(isinstance(v, (str, int, float, bool)) for v in values), f"grid.{axis}: scalar values")
        chk(not set(MODULE_AXES) <= set(grid), "grid: use one of 'modules' and 'method', not both")
        axis = "method" if "method" in grid else "modules"
        chk(not d["methods"] or axis == "method", "methods: defined methods need a grid.method axis")
        all_methods = {**METHODS, **d["methods"]}

        def canon(label: str) -> str:
            return canonical_method(label, all_methods) if axis == "method" else canonical_modules(label)

        try:
            mods = [canon(m) for m in grid.get(axis, [])]
        except ValueError as exc:
            raise ValueError(f"{where}: grid.{axis}: {exc}") from None
        base = [m for m in mods if is_baseline(m, all_methods)]
        chk(len(base) == 1, f"grid.{axis} must include 'none' or '{BASELINE}' once: the no-KD baseline is "
                            "part of every study")
        grid[axis] = base + [m for m in mods if m != base[0]]
        d["grid"] = grid
    else:
        chk(not d.get("grid"), "grid is for sampler: grid (use search_space:)")
        chk(not d["methods"], "methods: only for sampler: grid with a method axis")
        chk(bool(d.get("n_trials")), "sampler tpe needs n_trials")
        raw = chk.keys(d.get("search_space"), set(d.get("search_space") or {}), "search_space")
        space: dict[str, ParamSpec] = {}
        for name, p in raw.items():
            space[name] = _param(name, p, chk, list(space))
        chk(bool(space), "search_space must not be empty")
        d["search_space"] = space
    if check_config and d["objective"] == "engine":
        lambdas = _check_config_keys(d, chk, base_dir)
        d["module_weights"] = {m: float(mw.get(m, lambdas[m] or 1.0)) for m in MODULES}
    else:
        d["module_weights"] = {m: float(mw.get(m, 1.0)) for m in MODULES}
    return AblationSpec(source=where, **d)


def load_spec(path: str | Path) -> AblationSpec:
    """Read and validate ``ablations/<name>.yaml`` (``yaml.safe_load``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ablation spec {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    return spec_from_dict(data or {}, str(path), base_dir=path.parent)
