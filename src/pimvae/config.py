"""Run configs: frozen dataclasses, read from and written to YAML, that build the data, the model and the objective.

One run = ``data`` + ``model`` + ``objective`` + ``train``::

    data:
      name: linear_gaussian            # a builder in pimvae.data.REGISTRY, or "package.module:function"
      options: {n: 2000, num_modalities: 3, latent_dim: 4, dim_range: [6, 10]}
      split: [0.8, 0.1, 0.1]           # train / validation / test fractions (shuffled, seeded)
    model:
      latent_dim: 4
      feature_dim: 32
      default_modality:                # every data modality not listed under `modalities`
        encoder: {type: mlp, hidden: [64]}
        decoder: {type: linear}
        likelihood: {type: normal, scale: 1.0}
      modalities: {}                   # name → the same keys; unset keys come from default_modality
      aggregator: {type: sum_pooling, embed_dim: 64}
      prior: {type: standard_normal}
      private: null                    # or {type: sum_pooling, dim: 2, ...}: private latents (SPEC §5)
    objective: {name: masked, beta: 1.0, subsets: {type: hierarchical}, num_samples: 1}
    train: {lr: 3.0e-3, batch_size: 250, max_steps: 600}

Components (``aggregator``, ``prior``, ``likelihood``, ``encoder``/``decoder``, ``subsets``) are
``{type: <registry name>, **options}``; the options are checked against the component's constructor, so an
unknown option or a wrong type fails at load time with the key's path (``model.aggregator.embed_dimm``). A
component given without ``type`` keeps the default type and merges its options onto the default's. Sizes that
follow from the data (input sizes, class counts) are filled in when the model is built.

Private latents (SPEC §5): ``model.private: {type: <pimvae.private.REGISTRY name>, dim: D̃, **options}`` (absent:
none) makes the latent ``z = [z', z̃_1, …, z̃_M]`` with ``z'`` of size ``model.latent_dim`` = D'. The aggregator is
built for D' and wrapped in :class:`~pimvae.private.WithPrivate` with that private encoder, the prior is wrapped
in :class:`~pimvae.private.PrivatePrior`, and every decoder reads ``D' + D̃`` inputs (the model's ``latent_dim`` is
``D' + M·D̃``).

Overrides (``train.lr=3e-4``, ``model.aggregator.type=self_attention``) are YAML values at a dotted path, applied
before validation. Strings exist only here: :func:`build_model`, :func:`build_objective` and :func:`build_data`
turn the names into objects through the registries.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import yaml

__all__ = [
    "Component",
    "DataConfig",
    "ModalityConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "RunConfig",
    "Splits",
    "load_config",
    "load_named_or_path",
    "QUICKSTART",
    "EMBEDDED",
    "parse_config",
    "dump_config",
    "to_dict",
    "apply_overrides",
    "load_yaml",
    "parse_value",
    "build_data",
    "build_model",
    "build_objective",
]


# ---------------------------------------------------------------------------------------------------------------
# The config classes
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """A registered component: its registry name and constructor options (YAML: ``{type: name, **options}``)."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _component(registry: str, default: Component | None, skip: Sequence[str] = (), optional: bool = False):
    """A dataclass field holding a :class:`Component` looked up in ``registry`` (a key of ``_REGISTRIES``)."""
    meta = {"registry": registry, "skip": tuple(skip)}
    if default is None:
        return field(default=None, metadata=meta)
    return field(default_factory=lambda: Component(default.type, dict(default.options)), metadata=meta)


# constructor arguments the builders fill in themselves
_NETWORK_SKIP = ("in_shape", "out_shape", "num_classes", "in_dim", "out_dim", "length", "vocab_size")


@dataclass(frozen=True)
class DataConfig:
    """Which data set, how to split it, and optional missingness.

    ``name``: a builder in ``pimvae.data.REGISTRY`` or ``"package.module:function"``; ``options`` are its
    arguments. ``split``: train / validation / test fractions (shuffled with ``split_seed``; a zero fraction
    gives no such part). ``missing_rate``: drop each modality completely at random (every data point keeps one).
    """

    name: str = "linear_gaussian"
    options: dict[str, Any] = field(default_factory=dict)
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    missing_rate: float = 0.0
    missing_seed: int = 0

    def __post_init__(self):
        if len(self.split) != 3 or any(f < 0 for f in self.split) or not 0 < sum(self.split) <= 1 + 1e-9:
            raise ValueError(f"data.split must be three non-negative fractions (train, val, test) summing to at most 1, got {list(self.split)}")
        if self.split[0] <= 0:
            raise ValueError("data.split: the training fraction must be positive")
        if not 0 <= self.missing_rate < 1:
            raise ValueError(f"data.missing_rate must lie in [0, 1), got {self.missing_rate}")


@dataclass(frozen=True)
class ModalityConfig:
    """One modality: feature encoder, decoder, likelihood, log-likelihood weight, and the class count of a
    categorical modality (``None``: read off the data as ``max + 1``)."""

    encoder: Component = _component("network", Component("mlp", {"hidden": [256, 256]}), _NETWORK_SKIP)
    decoder: Component = _component("network", Component("mlp", {"hidden": [256, 256]}), _NETWORK_SKIP)
    likelihood: Component = _component("likelihood", Component("normal"))
    weight: float = 1.0
    num_classes: int | None = None

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"weight must be positive, got {self.weight}")


@dataclass(frozen=True)
class ModelConfig:
    """Latent size D, feature size E, modalities, aggregator and prior."""

    latent_dim: int = 4
    feature_dim: int = 32
    default_modality: ModalityConfig = field(default_factory=ModalityConfig)
    modalities: dict[str, ModalityConfig] = field(default_factory=dict, metadata={"base": "default_modality"})
    aggregator: Component = _component("aggregator", Component("sum_pooling"), ("feature_dim", "latent_dim"))
    prior: Component = _component("prior", Component("standard_normal"), ("latent_dim",))
    private: Component | None = _component("private", None, ("feature_dim", "shared_dim"))

    def __post_init__(self):
        for key in ("latent_dim", "feature_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.private is not None:
            dim = self.private.options.get("dim")
            if dim is None:
                raise ValueError("model.private.dim is required: the size D̃ of each modality's private latent")
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"model.private.dim must be a positive integer, got {_describe(dim)}")

    @property
    def decoder_input_dim(self) -> int:
        """What each decoder reads: D' (= ``latent_dim``), plus D̃ with private latents."""
        return self.latent_dim + (self.private.options["dim"] if self.private is not None else 0)


@dataclass(frozen=True)
class ObjectiveConfig:
    """``name`` in ``pimvae.objectives.REGISTRY``; ``subsets``: the subset distribution ρ (``None``: the
    objective's default)."""

    name: str = "masked"
    beta: float = 1.0
    subsets: Component | None = _component("subsets", None)
    num_samples: int = 1
    importance_weighted: bool = False

    def __post_init__(self):
        from . import objectives

        if self.name not in objectives.REGISTRY:
            raise ValueError(f"objective.name: unknown objective {self.name!r}; choose from {sorted(objectives.REGISTRY)}")
        if not self.beta > 0:
            raise ValueError(f"objective.beta must be positive, got {self.beta}")
        if self.num_samples < 1:
            raise ValueError(f"objective.num_samples must be at least 1, got {self.num_samples}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping.

    Adam(``lr``, ``betas``, ``weight_decay``); with ``final_lr`` the rate decays from ``lr`` to ``final_lr`` on a
    cosine over the run, after ``warmup_steps`` of linear warm-up. ``grad_clip``: clip the global gradient norm.
    Training stops at ``max_steps`` or ``max_epochs``, whichever comes first (at least one is required), or early
    when the validation bound has not improved by ``early_stopping_min_delta`` for ``early_stopping_patience``
    validations. ``restore_best``: at the end, load the parameters of the validation with the highest bound into
    the model (and its saved copy), as Keras' ``restore_best_weights``; the last checkpoint keeps the last
    parameters, so a resumed run continues from where it stopped. Metrics are written every ``log_every_n_steps`` steps; checkpoints every
    ``checkpoint_every_n_steps`` steps (``None``: only at the end) and at the end. ``seed`` fixes the model's
    initialisation (when built from a config), the data order and every sampled subset and noise draw.
    ``accelerator`` / ``devices`` / ``num_nodes`` / ``strategy`` / ``precision`` go to ``lightning.Trainer``.
    ``num_threads``: CPU threads for torch during the run (``None``: torch's default). Small models on a busy
    machine train many times faster with 1 than with several competing threads. ``compile``: run the objective
    (forward, and its backward through AOTAutograd) under ``torch.compile``; measured 0.7–0.8× the eager step
    time for the expert and SumPooling aggregators on CPU, no gain for SelfAttention (``docs/performance.md``);
    the first steps pay the compilation (seconds to a minute). ``kl_warmup_steps``: KL annealing — the weight of
    the objective's KL-type terms rises linearly from 0 to its β over the first ``kl_warmup_steps`` steps (Bowman
    et al. 2016, Sønderby et al. 2016), a common remedy for collapsed latent dimensions; measured on linear-dense it
    repairs some seeds and collapses others (``docs/results/linear-dense/``). The training loss is not the bound
    until the warm-up ends; validation always uses the objective's β.
    """

    seed: int = 0
    lr: float = 1e-3
    final_lr: float | None = None
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 250
    val_batch_size: int | None = None
    max_epochs: int | None = None
    max_steps: int | None = 1000
    grad_clip: float | None = None
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int | None = 1000
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    restore_best: bool = False
    val_every_n_epochs: int = 1
    drop_last: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress_bar: bool = True
    tensorboard: bool = True
    num_threads: int | None = None
    compile: bool = False
    kl_warmup_steps: int = 0

    def __post_init__(self):
        def positive(key, allow_none=False):
            v = getattr(self, key)
            if v is None and allow_none:
                return
            if v is None or not v > 0:
                raise ValueError(f"train.{key} must be positive, got {v}")

        for key in ("lr", "batch_size", "log_every_n_steps", "val_every_n_epochs", "num_nodes"):
            positive(key)
        for key in ("val_batch_size", "max_epochs", "max_steps", "grad_clip", "checkpoint_every_n_steps",
                    "early_stopping_patience", "num_threads"):
            positive(key, allow_none=True)
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("train: set max_steps or max_epochs (or both)")
        if self.final_lr is not None and not 0 <= self.final_lr <= self.lr:
            raise ValueError(f"train.final_lr must lie in [0, train.lr = {self.lr}], got {self.final_lr}")
        for key in ("warmup_steps", "kl_warmup_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be non-negative, got {getattr(self, key)}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be non-negative, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas must lie in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------------------------
# Registries, looked up lazily (strings stay at the edge)
# ---------------------------------------------------------------------------------------------------------------
def _registry(kind: str) -> Mapping[str, Any]:
    from . import aggregators, architectures, likelihoods, objectives, priors, private

    return {
        "network": architectures.REGISTRY,
        "likelihood": likelihoods.REGISTRY,
        "aggregator": aggregators.REGISTRY,
        "prior": priors.REGISTRY,
        "subsets": objectives.SUBSET_SAMPLERS,
        "private": private.REGISTRY,
    }[kind]


def _target(kind: str, cls: type) -> Callable:
    """The callable whose signature the options of a component are checked against."""
    if kind == "network":
        return cls.from_shapes
    if kind == "private":
        return _private_target(cls)
    return cls


def _private_target(cls: type) -> Callable:
    """A private encoder's options in a config: its constructor's, with ``dim`` in place of ``private_dim``
    (``feature_dim`` and ``shared_dim`` are filled in by :func:`build_model`)."""
    params, _ = _parameters(cls)
    defaults = {name: p.default for c in reversed(cls.__mro__) if "__init__" in c.__dict__ and c is not object
                for name, p in inspect.signature(c.__init__).parameters.items()}
    kw = inspect.Parameter.KEYWORD_ONLY
    sig = [inspect.Parameter("dim", kw, annotation=int)]
    sig += [inspect.Parameter(name, kw, default=defaults.get(name, inspect.Parameter.empty), annotation=tp)
            for name, tp in params.items() if name != "private_dim"]

    def target(**options):  # pragma: no cover - only its signature is read
        raise TypeError("a signature for checking options, not to be called")

    target.__signature__ = inspect.Signature(sig)
    target.__annotations__ = {p.name: p.annotation for p in sig}
    target.__qualname__ = cls.__qualname__
    return target


# ---------------------------------------------------------------------------------------------------------------
# Type checking
# ---------------------------------------------------------------------------------------------------------------
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (and converted where YAML is loose); ``ValueError``
    naming ``key`` otherwise."""
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as err:
                errors.append(err)
        raise ValueError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {_describe(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{key}: expected one of {list(args)}, got {_describe(value)}")
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if tp is Component:
        raise TypeError("components are parsed with their registry")  # pragma: no cover - internal
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{key}: expected a string, got {_describe(value)}")
    if tp is torch.dtype:
        if isinstance(value, str) and value.removeprefix("torch.") in _DTYPES:
            return _DTYPES[value.removeprefix("torch.")]
        raise ValueError(f"{key}: expected a dtype name ({', '.join(_DTYPES)}), got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ValueError(f"{key}: expected a list of {len(args)} values, got {_describe(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (list, collections.abc.Sequence) or tp in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {_describe(value)}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, collections.abc.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping, got {_describe(value)}")
        item = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ValueError(f"{key}: a {tp.__name__} cannot be given in a config (got {_describe(value)})")
    return value  # an annotation we cannot check (forward references, protocols)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


def _parameters(target: Callable) -> tuple[dict[str, Any], bool]:
    """``(name → annotation, accepts_anything)`` for the keyword arguments ``target`` takes.

    A class is read through its ``__init__``; ``**kwargs`` forwarded to a parent ``__init__`` (or from a
    ``from_shapes`` classmethod to the class) are followed.
    """
    funcs: list[Callable] = []
    owner = getattr(target, "__self__", None)  # a bound classmethod
    if isinstance(target, type):
        funcs = [c.__init__ for c in target.__mro__ if "__init__" in c.__dict__ and c is not object]
    else:
        funcs = [target]
        if isinstance(owner, type):
            funcs += [c.__init__ for c in owner.__mro__ if "__init__" in c.__dict__ and c is not object]
    params: dict[str, Any] = {}
    for fn in funcs:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return params, True
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        var_kw = False
        for name, p in sig.parameters.items():
            if name in ("self", "cls") or p.kind == p.VAR_POSITIONAL:
                continue
            if p.kind == p.VAR_KEYWORD:
                var_kw = True
                continue
            params.setdefault(name, hints.get(name, Any))
        if not var_kw:
            return params, False
    return params, bool(funcs) and not isinstance(target, type) and owner is None


def check_options(target: Callable, options: Mapping[str, Any], key: str, skip: Sequence[str] = ()) -> dict:
    """Check ``options`` against ``target``'s keyword arguments; returns them converted."""
    params, open_ended = _parameters(target)
    out = {}
    for name, value in options.items():
        if name in skip:
            raise ValueError(f"{key}.{name} is set from the data and model sizes; remove it")
        if name not in params:
            if open_ended:
                out[name] = value
                continue
            allowed = sorted(p for p in params if p not in skip)
            raise ValueError(f"{key}.{name}: unknown option; {_target_name(target)} takes {allowed}")
        out[name] = _coerce(value, params[name], f"{key}.{name}")
    return out


def _target_name(target: Callable) -> str:
    owner = getattr(target, "__self__", None)
    return getattr(owner if isinstance(owner, type) else target, "__qualname__", str(target))


# ---------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------
def _parse_component(raw: Any, default: Component | None, meta: Mapping, key: str) -> Component | None:
    if raw is None:
        return None
    if isinstance(raw, Component):
        raw = {"type": raw.type, **raw.options}
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key}: expected a mapping {{type: name, ...options}} or a name, got {_describe(raw)}")
    raw = dict(raw)
    kind = raw.pop("type", None if default is None else default.type)
    if kind is None:
        raise ValueError(f"{key}.type is required")
    if not isinstance(kind, str):
        raise ValueError(f"{key}.type: expected a string, got {_describe(kind)}")
    registry = _registry(meta["registry"])
    if kind not in registry:
        raise ValueError(f"{key}.type: unknown {meta['registry']} {kind!r}; choose from {sorted(registry)}")
    options = dict(default.options) if default is not None and default.type == kind else {}
    options.update(raw)
    options = check_options(_target(meta["registry"], registry[kind]), options, key, meta.get("skip", ()))
    return Component(kind, options)


def _from_dict(cls: type, raw: Any, key: str, base: Any = None) -> Any:
    """Build dataclass ``cls`` from a mapping; defaults from ``base`` (an instance) when given."""
    if isinstance(raw, cls):
        raw = to_dict(raw)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key}: expected a mapping, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            raise ValueError(f"{_join(key, name)}: unknown key; {key or 'the config'} takes {list(fields)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        sub = _join(key, name)
        default = getattr(base, name) if base is not None else _default(f)
        if "registry" in f.metadata:
            values[name] = _parse_component(raw[name], default, f.metadata, sub) if name in raw else default
        elif name not in raw:
            values[name] = default
        elif "base" in f.metadata:  # a mapping of dataclasses whose defaults come from a sibling field
            item_cls = typing.get_args(hints[name])[1]
            if not isinstance(raw[name], Mapping):
                raise ValueError(f"{sub}: expected a mapping, got {_describe(raw[name])}")
            values[name] = {str(k): _from_dict(item_cls, v, f"{sub}.{k}", values[f.metadata["base"]])
                            for k, v in raw[name].items()}
        elif dataclasses.is_dataclass(hints[name]):
            values[name] = _from_dict(hints[name], raw[name], sub, default if base is not None else None)
        else:
            values[name] = _coerce(raw[name], hints[name], sub)
    try:
        return cls(**values)
    except ValueError as err:
        msg = str(err)
        # __post_init__ messages name the section (train.lr); nested ones (modalities) get their path added
        raise ValueError(msg if msg.startswith(key.split(".")[0]) or not key else f"{key}: {msg}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{f.name} is required")  # pragma: no cover - every field has a default


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def to_dict(config: Any) -> Any:
    """A plain (YAML-able) copy of a config: components as ``{type, **options}``, tuples as lists."""
    if isinstance(config, Component):
        return {"type": config.type, **to_dict(dict(config.options))}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {str(k): to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, torch.dtype):
        return str(config).removeprefix("torch.")
    return config


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a number with an exponent and no dot (``3e-4``) is a float, as in YAML 1.2;
    YAML 1.1 reads it as the string ``'3e-4'``."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    """``text`` read as YAML (safe: plain data only), with ``3e-4`` a number."""
    return yaml.load(text, Loader=_Loader)


def parse_value(text: str) -> Any:
    """A command-line value (``key=value``) read as YAML: ``3e-4`` → 0.0003, ``[poe, moe]`` → a list; text that
    is not valid YAML stays the string it is."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> dict:
    """``raw`` with each ``dotted.key=value`` (YAML value) set; a leading ``--`` is allowed."""
    out = _deepcopy(raw)
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        path, eq, value = text.partition("=")
        if not eq or not path:
            raise ValueError(f"override {item!r} is not of the form key.path=value (e.g. train.lr=3e-4)")
        parts = path.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                if isinstance(nxt, str):  # a component given by name: expand it
                    nxt = node[part] = {"type": nxt}
                else:
                    raise ValueError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = parse_value(value)
    return out


def _deepcopy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deepcopy(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return [_deepcopy(v) for v in raw]
    return raw


def parse_config(raw: Mapping | None, overrides: Sequence[str] = ()) -> RunConfig:
    """A :class:`RunConfig` from a plain mapping (e.g. parsed YAML) and overrides."""
    raw = apply_overrides(raw or {}, overrides)
    config = _from_dict(RunConfig, raw, "")
    _check_data_options(config.data)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config and apply overrides."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except OSError as err:
        raise ValueError(f"cannot read config {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a run config is a mapping with data / model / objective / train sections")
    return parse_config(raw, overrides)


def dump_config(config: RunConfig, path: str | Path | None = None) -> str:
    """The YAML text of a config (every default spelled out); written to ``path`` when given."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None, width=110)
    if path is not None:
        Path(path).write_text(text)
    return text


def _check_data_options(data: DataConfig) -> None:
    from .data.loaders import resolve

    builder = resolve(data.name)
    options = check_options(builder, data.options, "data.options")
    object.__setattr__(data, "options", options)  # converted values (e.g. "3e-4" → 3e-4); still frozen to users


# ---------------------------------------------------------------------------------------------------------------
# Embedded configs (a test keeps examples/configs/quickstart.yaml identical to QUICKSTART)
# ---------------------------------------------------------------------------------------------------------------
QUICKSTART = """\
# The embedded default: a masked-bound VAE on in-process linear Gaussian data (3 modalities, D = 4).
# Linear decoders with the true noise scale make the learned model linear Gaussian, so its exact log-likelihood
# is known. Run:  pimvae fit examples/configs/quickstart.yaml --run-dir runs/quickstart
data:
  name: linear_gaussian
  options: {n: 2000, num_modalities: 3, latent_dim: 4, dim_range: [6, 10], seed: 0}
  split: [0.8, 0.1, 0.1]
model:
  latent_dim: 4
  feature_dim: 32
  default_modality:
    encoder: {type: mlp, hidden: [64]}
    decoder: {type: linear}
    likelihood: {type: normal, scale: 1.0}
  aggregator: {type: sum_pooling, embed_dim: 64, chi_hidden: [64], rho_hidden: [64]}
  prior: {type: standard_normal}
objective: {name: masked, beta: 1.0, subsets: {type: hierarchical}}
train:
  seed: 0
  lr: 3.0e-3
  batch_size: 250
  max_steps: 600
  log_every_n_steps: 50
  checkpoint_every_n_steps: 200
  num_threads: 1             # small model: one thread beats several competing ones
"""

#: name → YAML text of the configs shipped inside the package (``pimvae fit quickstart``)
EMBEDDED: dict[str, str] = {"quickstart": QUICKSTART}


def load_named_or_path(name_or_path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """A config file, or an embedded config by name (``quickstart``) when no such file exists."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in EMBEDDED:
        return parse_config(load_yaml(EMBEDDED[str(name_or_path)]), overrides)
    if not path.exists():
        raise ValueError(f"config {str(name_or_path)!r} not found (a YAML file, or one of {sorted(EMBEDDED)})")
    return load_config(path, overrides)


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Splits:
    """The data of a run: train, and validation / test parts when their fractions are positive."""

    train: Any
    val: Any = None
    test: Any = None


def build_data(config: RunConfig | DataConfig) -> Splits:
    """Build, corrupt (missing at random) and split the data set a config names."""
    from .data.loaders import build

    cfg = config.data if isinstance(config, RunConfig) else config
    _check_data_options(cfg)
    ds = build(cfg.name, **cfg.options)
    if cfg.missing_rate > 0:
        ds = ds.with_missing(cfg.missing_rate, seed=cfg.missing_seed)
    train, val, test = ds.split(list(cfg.split), seed=cfg.split_seed)
    return Splits(train, val if cfg.split[1] > 0 else None, test if cfg.split[2] > 0 else None)


def build_model(config: RunConfig | ModelConfig, dataset) -> "torch.nn.Module":
    """The :class:`~pimvae.MultimodalVAE` a model config describes, sized for ``dataset`` (any split of the data).

    Call ``torch.manual_seed`` first for a reproducible initialisation (``pimvae fit`` uses ``train.seed``).
    """
    from . import architectures
    from .modality import Modality
    from .model import MultimodalVAE

    cfg = config.model if isinstance(config, RunConfig) else config
    unknown = [n for n in cfg.modalities if n not in dataset.names]
    if unknown:
        raise ValueError(f"model.modalities.{unknown[0]}: the data has no such modality; it has {dataset.names}")
    modalities = {}
    for i, name in enumerate(dataset.names):
        mcfg = cfg.modalities.get(name, cfg.default_modality)
        key = f"model.modalities.{name}" if name in cfg.modalities else "model.default_modality"
        x = dataset.data[name]
        shape = tuple(x.shape[1:])
        lik_cls = _registry("likelihood")[mcfg.likelihood.type]
        lik_options = dict(mcfg.likelihood.options)
        num_classes = None
        if lik_cls.integer_data:
            if x.is_floating_point():
                raise ValueError(f"{key}.likelihood: {mcfg.likelihood.type} needs integer data; modality {name!r} is {x.dtype}")
            observed = x[dataset.present[:, i]]
            num_classes = mcfg.num_classes if mcfg.num_classes is not None else int(observed.max()) + 1
            if observed.numel() and (int(observed.max()) >= num_classes or int(observed.min()) < 0):
                raise ValueError(f"{key}.num_classes = {num_classes}, but modality {name!r} has classes up to {int(observed.max())}")
        elif lik_options.get("learn_scale") == "per_dim" and lik_options.get("shape") is None:
            lik_options["shape"] = shape
        param_shape = shape + ((num_classes,) if num_classes is not None else ())
        encoder = architectures.build({"type": mcfg.encoder.type, **mcfg.encoder.options}, shape,
                                      (cfg.feature_dim,), num_classes, key=f"{key}.encoder")
        decoder = architectures.build({"type": mcfg.decoder.type, **mcfg.decoder.options}, (cfg.decoder_input_dim,),
                                      param_shape, num_classes, key=f"{key}.decoder")
        modalities[name] = Modality(encoder, decoder, lik_cls(**lik_options), weight=mcfg.weight, shape=shape)
    aggregator = _registry("aggregator")[cfg.aggregator.type](cfg.feature_dim, cfg.latent_dim, **cfg.aggregator.options)
    prior = _registry("prior")[cfg.prior.type](cfg.latent_dim, **cfg.prior.options)
    if cfg.private is not None:
        aggregator, prior = _with_private(cfg, aggregator, prior, len(modalities))
    model = MultimodalVAE(modalities, aggregator, prior)
    dtypes = {x.dtype for x in dataset.data.values() if x.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    return model


def _with_private(cfg: ModelConfig, aggregator, prior, num_modalities: int):
    """The aggregator and prior of ``cfg`` (built for the shared D') wrapped for private latents of size D̃."""
    from .private import PrivatePrior, WithPrivate

    options = dict(cfg.private.options)
    dim = options.pop("dim")
    cls = _registry("private")[cfg.private.type]
    sizes = {"feature_dim": cfg.feature_dim, "private_dim": dim}
    if "shared_dim" in _parameters(cls)[0]:
        sizes["shared_dim"] = cfg.latent_dim
    encoder = cls(**sizes, **options)
    return WithPrivate(aggregator, encoder, num_modalities), PrivatePrior(prior, num_modalities, dim)


def build_objective(config: RunConfig | ObjectiveConfig):
    """The objective an objective config describes."""
    from . import objectives

    cfg = config.objective if isinstance(config, RunConfig) else config
    subsets = None
    if cfg.subsets is not None:
        subsets = objectives.SUBSET_SAMPLERS[cfg.subsets.type](**cfg.subsets.options)
    return objectives.REGISTRY[cfg.name](beta=cfg.beta, subsets=subsets, num_samples=cfg.num_samples,
                                         importance_weighted=cfg.importance_weighted)
