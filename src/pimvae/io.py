"""Saving a trained model for use: a JSON description plus safetensors weights — nothing is pickled.

``model.save(directory)`` writes

* ``config.json`` — how to rebuild the model: for each modality its encoder, decoder and likelihood, then the
  aggregator and the prior, each as ``{"type": name, **constructor arguments}`` (the components' ``config()``);
* ``model.safetensors`` — every parameter and buffer.

``MultimodalVAE.load(directory)`` rebuilds the modules from ``config.json`` and loads the weights. Modules it can
describe: everything in :data:`pimvae.architectures.REGISTRY` (MLPs, the paper's convolutional image and text
networks), :class:`pimvae.nn.MLP`, common ``torch.nn`` layers (``Linear``, ``Embedding``, ``Conv*``,
activations, ``Flatten`` …) and ``nn.Sequential`` stacks of them, and the registered likelihoods, aggregators
and priors. Any other module is recorded as ``{"type": "custom", "class": "pkg.module.Class"}`` and must be
passed again at load time, built the same way, under its path::

    model.save("trained")                        # encoder of modality "image" is a custom nn.Module
    model = MultimodalVAE.load("trained", modules={"image.encoder": MyEncoder(...)})

Paths: ``"<modality>.encoder"``, ``"<modality>.decoder"``, ``"<modality>.likelihood"``, ``"aggregator"``,
``"prior"`` (with private latents also ``"aggregator.shared"``, ``"aggregator.private"``, ``"prior.shared"``). The weights of a passed module are loaded from the file like any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

from . import aggregators, architectures, likelihoods, priors, private
from .modality import Modality
from .nn import MLP

if TYPE_CHECKING:
    from .model import MultimodalVAE

__all__ = ["save_model", "load_model", "describe_module", "build_module", "FORMAT", "VERSION"]

FORMAT = "pimvae-model"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# ---------------------------------------------------------------------------------------------------------------
# torch.nn layers described by their constructor arguments
# ---------------------------------------------------------------------------------------------------------------
def _conv_args(m: nn.Module) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
            "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _convt_args(m: nn.Module) -> dict:
    args = _conv_args(m)
    args["output_padding"] = list(m.output_padding)
    return args


_TORCH_LAYERS: dict[type[nn.Module], Callable[[Any], dict]] = {
    nn.Linear: lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    nn.Embedding: lambda m: {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim,
                             "padding_idx": m.padding_idx},
    nn.Conv1d: _conv_args, nn.Conv2d: _conv_args, nn.ConvTranspose1d: _convt_args, nn.ConvTranspose2d: _convt_args,
    nn.LayerNorm: lambda m: {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
                             "elementwise_affine": m.elementwise_affine},
    nn.Dropout: lambda m: {"p": m.p},
    nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
    nn.Unflatten: lambda m: {"dim": m.dim, "unflattened_size": list(m.unflattened_size)},
    nn.Identity: lambda m: {},
    nn.ReLU: lambda m: {}, nn.Tanh: lambda m: {}, nn.Sigmoid: lambda m: {}, nn.SiLU: lambda m: {},
    nn.Softplus: lambda m: {"beta": m.beta, "threshold": m.threshold},
    nn.LeakyReLU: lambda m: {"negative_slope": m.negative_slope},
    nn.ELU: lambda m: {"alpha": m.alpha},
    nn.GELU: lambda m: {"approximate": m.approximate},
}
_TORCH_BY_NAME = {f"torch.nn.{cls.__name__}": cls for cls in _TORCH_LAYERS}

# registries of pimvae components, by role
_ROLES: dict[str, Mapping[str, type]] = {
    "likelihood": likelihoods.REGISTRY,
    "aggregator": aggregators.REGISTRY,
    "prior": priors.REGISTRY,
    "private": private.REGISTRY,
    "network": {**architectures.REGISTRY, "pimvae.nn.MLP": MLP},
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record {type(value).__name__} {value!r} in a JSON config")


def _name_of(obj: object, table: Mapping[str, type]) -> str | None:
    for name, cls in table.items():
        if type(obj) is cls:
            return name
    return None


def describe_module(module: nn.Module, role: str = "network") -> dict:
    """``{"type": name, **config}`` for a known module, ``{"type": "custom", "class": ...}`` otherwise.

    Private latents nest: a :class:`~pimvae.private.WithPrivate` aggregator is ``{"type": "with_private",
    "shared": <aggregator>, "private": <private encoder>, "num_modalities": M}`` and a
    :class:`~pimvae.private.PrivatePrior` is ``{"type": "private", "shared": <prior>, ...}``; the nested records
    keep their own ``feature_dim`` / ``latent_dim``.
    """
    if role == "aggregator" and type(module) is private.WithPrivate:
        return {"type": "with_private", "shared": describe_module(module.shared, "aggregator"),
                "private": describe_module(module.private, "private"), **_jsonable(module.config())}
    if role == "prior" and type(module) is private.PrivatePrior:
        return {"type": "private", "shared": describe_module(module.shared, "prior"), **_jsonable(module.config())}
    name = _name_of(module, _ROLES[role])
    if name is not None:
        return {"type": name, **_jsonable(module.config())}
    if role == "network":
        if type(module) is nn.Sequential:
            layers = [describe_module(m) for m in module]
            if all(layer["type"] != "custom" for layer in layers):
                return {"type": "torch.nn.Sequential", "layers": layers}
        elif type(module) in _TORCH_LAYERS:
            return {"type": f"torch.nn.{type(module).__name__}", **_jsonable(_TORCH_LAYERS[type(module)](module))}
    return {"type": "custom", "class": f"{type(module).__module__}.{type(module).__qualname__}"}


def build_module(spec: Mapping, path: str, role: str = "network", modules: Mapping[str, nn.Module] | None = None,
                 **context: Any) -> nn.Module:
    """Rebuild a module from :func:`describe_module`'s record (``context``: leading constructor arguments)."""
    if modules and path in modules:
        return modules[path]
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "custom":
        raise ValueError(
            f"{path} is a custom module ({spec.get('class')}) that pimvae cannot rebuild from its config: build it "
            f"again and pass it, e.g. MultimodalVAE.load(dir, modules={{{path!r}: module}})"
        )
    if kind == "torch.nn.Sequential":
        return nn.Sequential(*[build_module(s, f"{path}.{i}", role, modules) for i, s in enumerate(spec["layers"])])
    if kind in _TORCH_BY_NAME:
        return _TORCH_BY_NAME[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    if (role, kind) in (("aggregator", "with_private"), ("prior", "private")):
        return _build_private(role, spec, path, modules, context)
    table = _ROLES[role]
    if kind not in table:
        raise ValueError(f"{path}: unknown {role} type {kind!r}; known: {sorted(table)}")
    return table[kind](**context, **spec)


def _build_private(role: str, spec: dict, path: str, modules: Mapping[str, nn.Module] | None, context: dict) -> nn.Module:
    """A :class:`~pimvae.private.WithPrivate` aggregator or :class:`~pimvae.private.PrivatePrior` from its nested
    record; ``context`` (the model's ``latent_dim`` / ``feature_dim``) is checked against the rebuilt module."""
    shared = build_module(spec.pop("shared"), f"{path}.shared", role, modules)
    if role == "aggregator":
        built: nn.Module = private.WithPrivate(shared, build_module(spec.pop("private"), f"{path}.private", "private",
                                                                    modules), **spec)
    else:
        built = private.PrivatePrior(shared, **spec)
    for key, value in context.items():
        if getattr(built, key, value) != value:
            raise ValueError(f"{path}: the rebuilt {type(built).__name__} has {key}={getattr(built, key)}, the saved "
                             f"model has {value}")
    return built


# ---------------------------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------------------------
def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def describe_model(model: "MultimodalVAE") -> dict:
    """The JSON-able description written to ``config.json``."""
    mods = {}
    for name, mod in model.modalities.items():
        mods[name] = {
            "encoder": describe_module(mod.encoder),
            "decoder": describe_module(mod.decoder),
            "likelihood": describe_module(mod.likelihood, "likelihood"),
            "weight": mod.weight,
            "shape": None if mod.shape is None else list(mod.shape),
        }
    agg, prior = describe_module(model.aggregator, "aggregator"), describe_module(model.prior, "prior")
    for key in ("feature_dim", "latent_dim"):
        agg.pop(key, None)
    prior.pop("latent_dim", None)
    extra = model.config() if callable(getattr(model, "config", None)) else {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "dtype": str(_model_dtype(model)).removeprefix("torch."),
        "latent_dim": model.latent_dim,
        "feature_dim": model.aggregator.feature_dim,
        "modalities": mods,
        "aggregator": agg,
        "prior": prior,
        "options": _jsonable(extra),
    }


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model: "MultimodalVAE", directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed); returns it."""
    from safetensors.torch import save_model as _save_weights

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = describe_model(model)

    def write_config(p: str) -> None:
        with open(p, "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")

    _atomic_write(directory / WEIGHTS_FILE, lambda p: _save_weights(model, p, metadata={"format": FORMAT}))
    _atomic_write(directory / CONFIG_FILE, write_config)
    return directory


def read_config(directory: str | Path) -> dict:
    """The ``config.json`` of a saved model, checked; raises ``ValueError`` naming the problem."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{directory} holds no saved model: {CONFIG_FILE} is missing (write one with model.save(dir))")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pimvae model config (format {FORMAT!r} expected)")
    if config.get("version", 0) > VERSION:
        raise ValueError(f"{path} has format version {config['version']}; this pimvae reads up to {VERSION}")
    return config


def load_model(directory: str | Path, modules: Mapping[str, nn.Module] | None = None, cls: type | None = None,
               map_location: str | torch.device = "cpu") -> "MultimodalVAE":
    """Rebuild a model saved by :func:`save_model` and load its weights (``modules``: see the module docstring)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as _load_weights

    from .model import MultimodalVAE

    cls = cls or MultimodalVAE
    directory = Path(directory)
    config = read_config(directory)
    saved_cls = config.get("class", "")
    if saved_cls.rsplit(".", 1)[-1] != cls.__qualname__:
        raise ValueError(f"{directory} holds a {saved_cls}; load it with that class's .load, not {cls.__qualname__}.load")
    unknown = sorted(set(modules or {}) - _paths(config))
    if unknown:
        raise ValueError(f"modules names {unknown[0]!r}, which is not a component of the saved model; "
                         f"paths are {sorted(_paths(config))}")
    latent_dim, feature_dim = config["latent_dim"], config["feature_dim"]
    mods = {}
    for name, spec in config["modalities"].items():
        mods[name] = Modality(
            build_module(spec["encoder"], f"{name}.encoder", "network", modules),
            build_module(spec["decoder"], f"{name}.decoder", "network", modules),
            build_module(spec["likelihood"], f"{name}.likelihood", "likelihood", modules),
            weight=spec.get("weight", 1.0),
            shape=spec.get("shape"),
        )
    agg = build_module(config["aggregator"], "aggregator", "aggregator", modules,
                       feature_dim=feature_dim, latent_dim=latent_dim)
    prior = build_module(config["prior"], "prior", "prior", modules, latent_dim=latent_dim)
    model = cls(mods, agg, prior, **config.get("options", {}))
    dtype = getattr(torch, config.get("dtype", "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{directory / CONFIG_FILE}: unknown dtype {config.get('dtype')!r}")
    model = model.to(dtype)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{directory} holds no weights: {WEIGHTS_FILE} is missing")
    try:
        missing, unexpected = _load_weights(model, str(weights), strict=False, device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is corrupt or not a safetensors file: {err}") from None
    except RuntimeError as err:  # shape mismatch: the config and the weights disagree
        raise ValueError(f"{weights} does not fit the model described by {CONFIG_FILE}: {err}") from None
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit the model described by {CONFIG_FILE}: "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.to(map_location)


def _paths(config: dict) -> set[str]:
    paths = {"aggregator", "prior"}
    if config["aggregator"].get("type") == "with_private":
        paths |= {"aggregator.shared", "aggregator.private"}
    if config["prior"].get("type") == "private":
        paths.add("prior.shared")
    for name in config["modalities"]:
        paths |= {f"{name}.encoder", f"{name}.decoder", f"{name}.likelihood"}
    return paths
