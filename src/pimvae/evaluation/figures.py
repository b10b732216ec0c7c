"""Figures as PNG files (matplotlib's Agg canvas; pyplot and its global state are not touched).

* :func:`latent_scatter` — latents coloured by label or cluster, one panel per latent set (the paper's Figure 1).
* :func:`rate_distortion_bars` — rates / distortions across subsets, aggregators and bounds from a list of result
  records (Figures 2–5).
* :func:`image_grid` / :func:`generation_grid` — rows of images: data, reconstructions, cross-generations.
* :func:`validation_curves` — the validation bound over training, with the step kept and the step stopped at.

Every function writes ``path`` (parent folders created) and returns it.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["latent_scatter", "rate_distortion_bars", "image_grid", "generation_grid", "validation_curves",
           "METRIC_LABELS"]

#: axis titles for the metrics the evaluation produces
METRIC_LABELS = {
    "R_S": r"rate $R_S$",
    "D_S": r"distortion $D_S$",
    "R_not_S": r"cross rate $R_{\backslash S}$",
    "D_not_S": r"distortion $D_{\backslash S}$",
    "Dc_not_S": r"cross distortion $D^c_{\backslash S}$",
    "kl_posterior": r"KL$(q(z|x_S)\,\|\,p(z|x_S))$",
    "log_likelihood": r"$\log p(x_S)$",
}


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _numpy(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x)


def _project_2d(z: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    if z.ndim != 2:
        raise ValueError(f"latents must have shape (N, D), got {z.shape}")
    if z.shape[1] == 1:
        return np.concatenate([z, np.zeros_like(z)], 1), ("z1", "")
    if z.shape[1] == 2:
        return z, ("z1", "z2")
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[:2].T, ("PC 1", "PC 2")


PANEL_TITLE_CHARS = 34  # a 12-point title that fits over a 4-inch panel's axes


def panel_title(name, width: int = PANEL_TITLE_CHARS) -> str:
    """``name`` broken at spaces into lines of at most ``width`` characters (a longer word keeps its own line), so
    that a long panel title (e.g. "Our bound, SelfAttentionMixture, mixture prior") is not clipped at the figure's
    edge."""
    return textwrap.fill(str(name), width=width, break_long_words=False, break_on_hyphens=False)


def latent_scatter(z, path, labels=None, title: str | None = None, label_name: str = "label",
                   max_points: int = 5000) -> Path:
    """Scatter of latents ``z (N, D)`` — or several panels from a dict title → ``(N, D)`` — coloured by integer
    ``labels (N,)`` (classes or clusters). ``D > 2`` is projected on the first two principal components."""
    panels = dict(z) if isinstance(z, Mapping) else {title or "latents": z}
    if not panels:
        raise ValueError("nothing to plot")
    lab = None if labels is None else _numpy(labels).astype(np.int64).reshape(-1)
    fig, axes = _figure(1, len(panels), (4.0 * len(panels), 4.0))
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for ax, (name, zz) in zip(axes[0], panels.items()):
        zz = _numpy(zz)
        if lab is not None and len(lab) != len(zz):
            raise ValueError(f"panel {name!r} has {len(zz)} points but there are {len(lab)} labels")
        keep = slice(0, max_points)
        xy, (xl, yl) = _project_2d(zz)
        xy = xy[keep]
        if lab is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6, color="tab:blue")
        else:
            for c in np.unique(lab[keep]):
                sel = lab[keep] == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.7, color=cmap(int(c) % 10), label=f"{label_name} {c}")
            ax.legend(markerscale=3, fontsize="small", loc="best")
        ax.set_title(panel_title(name))
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    return _save(fig, path)


def _hue_label(rec: Mapping, hue: Sequence[str]) -> str:
    return " / ".join(str(rec.get(h, "?")) for h in hue)


def rate_distortion_bars(records: Sequence[Mapping], path, metrics: Sequence[str] | None = None,
                         x: str = "subset", hue: str | Sequence[str] | None = ("aggregator", "objective"),
                         title: str | None = None) -> Path:
    """Grouped bar charts: one panel per metric, bars at each value of ``records[i][x]`` (e.g. the subset),
    one colour per ``hue`` combination (e.g. aggregator / objective). Records with the same ``x`` and hue (e.g.
    repetitions) are averaged, with their standard deviation as an error bar.

    ``records``: dicts holding ``x``, the hue keys and metric values, e.g. the output of
    :func:`pimvae.evaluation.rate_distortion_table` with ``"aggregator"`` and ``"objective"`` added.
    ``metrics`` default: the rate / distortion keys the records hold.
    """
    records = list(records)
    if not records:
        raise ValueError("no records to plot")
    if metrics is None:
        metrics = [k for k in METRIC_LABELS if any(k in r for r in records) and k != "log_likelihood"]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("the records hold none of the metrics to plot")
    hue = () if hue is None else ((hue,) if isinstance(hue, str) else tuple(hue))
    hue = tuple(h for h in hue if any(h in r for r in records))
    xs = list(dict.fromkeys(str(r.get(x, "")) for r in records))
    groups = list(dict.fromkeys(_hue_label(r, hue) for r in records)) if hue else [""]
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = _figure(nrows, ncols, (max(4.5, 0.6 * len(xs) * max(1, len(groups)) ** 0.5 + 2) * ncols, 3.6 * nrows))
    colours = _palette(len(groups))
    width = 0.8 / len(groups)
    for i, metric in enumerate(metrics):
        ax = axes[i // ncols][i % ncols]
        for j, grp in enumerate(groups):
            means, errs = [], []
            for xv in xs:
                vals = [float(r[metric]) for r in records if str(r.get(x, "")) == xv
                        and (not hue or _hue_label(r, hue) == grp) and r.get(metric) is not None]
                means.append(np.mean(vals) if vals else np.nan)
                errs.append(np.std(vals) if len(vals) > 1 else 0.0)
            pos = np.arange(len(xs)) + (j - (len(groups) - 1) / 2) * width
            ax.bar(pos, means, width, yerr=errs, color=colours[j], label=grp or None, capsize=2)
        ax.set_xticks(np.arange(len(xs)))
        ax.set_xticklabels(xs, rotation=45 if max(len(v) for v in xs) > 6 else 0, ha="right", fontsize="small")
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.axhline(0.0, color="black", linewidth=0.5)
    spare = [axes[k // ncols][k % ncols] for k in range(len(metrics), nrows * ncols)]
    for ax in spare:
        ax.set_visible(False)
    if hue and len(groups) > 1:
        if spare:  # the legend gets an empty panel of its own instead of covering bars
            spare[0].set_visible(True)
            spare[0].axis("off")
            spare[0].legend(*axes[0][0].get_legend_handles_labels(), loc="center", fontsize="small",
                            ncols=1 + len(groups) // 9)
        else:
            axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def validation_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float], float | None]], path,
                      title: str | None = None, ylabel: str = "validation bound") -> Path:
    """One line per run: ``label → (steps, values, best_step)``; a dot marks ``best_step`` (the parameters kept,
    ``None``: none marked) and a line's end is where the run stopped. The y axis starts at the lowest value of the
    curves' last three quarters, so the early climb does not flatten the end of training."""
    curves = {k: (np.asarray(s, float), np.asarray(v, float), b) for k, (s, v, b) in curves.items() if len(s)}
    if not curves:
        raise ValueError("no curves to plot")
    fig, axes = _figure(1, 1, (7.5, 4.2))
    ax = axes[0][0]
    colours = _palette(len(curves))
    for colour, (label, (steps, values, best)) in zip(colours, curves.items()):
        ax.plot(steps, values, color=colour, linewidth=1.2, label=label)
        if best is not None:
            i = int(np.argmin(np.abs(steps - best)))
            ax.plot([steps[i]], [values[i]], "o", color=colour, markersize=5)
    tails = np.concatenate([v[len(v) // 4:] for _, v, _ in curves.values()])
    tails = tails[np.isfinite(tails)]
    top = max(float(np.nanmax(v)) for _, v, _ in curves.values())
    if tails.size and tails.min() < top:
        pad = 0.05 * (top - tails.min())
        ax.set_ylim(tails.min() - pad, top + pad)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(panel_title(title, 90))
    return _save(fig, path)


def _palette(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, evenly spaced viridis beyond."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def _as_images(x, image_shape: Sequence[int] | None) -> np.ndarray:
    """``(n, …)`` → ``(n, H, W)`` or ``(n, H, W, 3)`` floats."""
    x = _numpy(x).astype(np.float64)
    if image_shape is not None:
        x = x.reshape(x.shape[0], *image_shape)
    if x.ndim == 2:
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"cannot show vectors of size {x.shape[1]} as images: pass image_shape")
        x = x.reshape(-1, side, side)
    if x.ndim == 4:  # (n, C, H, W)
        if x.shape[1] == 1:
            x = x[:, 0]
        elif x.shape[1] == 3:
            x = x.transpose(0, 2, 3, 1)
        else:
            raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")
    if x.ndim not in (3, 4):
        raise ValueError(f"cannot show data of shape {x.shape} as images")
    return x


def image_grid(rows: Mapping[str, object], path, image_shape: Sequence[int] | None = None,
               max_columns: int = 10) -> Path:
    """One row of images per entry of ``rows`` (row title → ``(n, C, H, W)``, ``(n, H, W)`` or flat square
    images). Values in [0, 1] are shown as they are; rows outside that range are min-max scaled."""
    if not rows:
        raise ValueError("no rows to plot")
    imgs = {k: _as_images(v, image_shape)[:max_columns] for k, v in rows.items()}
    ncol = max(len(v) for v in imgs.values())
    fig, axes = _figure(len(imgs), ncol, (1.2 * ncol + 1.2, 1.3 * len(imgs)))
    for r, (name, ims) in enumerate(imgs.items()):
        lo, hi = float(ims.min()), float(ims.max())
        if lo < 0.0 or hi > 1.0:
            ims = (ims - lo) / (hi - lo if hi > lo else 1.0)
        ims = ims.clip(0.0, 1.0)
        for c in range(ncol):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(ims):
                ax.imshow(ims[c], cmap="gray" if ims.ndim == 3 else None, vmin=0.0, vmax=1.0)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize="small")
    return _save(fig, path)


def generation_grid(model, data, modality: str, path, given_sets: Sequence[Sequence[str]] | None = None,
                    num_images: int = 8, seed: int | None = 0, image_shape: Sequence[int] | None = None) -> Path:
    """Data, reconstructions and cross-generations of an image ``modality``: the first row shows the data, then
    one row per conditioning set (default: every single modality — the row of ``modality`` itself is its
    reconstruction — and all of them together)."""
    from .generation import generate

    if modality not in model.modalities:
        raise ValueError(f"unknown modality {modality!r}; the model has {model.names}")
    if given_sets is None:
        given_sets = [[n] for n in model.names] + ([model.names] if len(model.names) > 1 else [])
    from ..data.dataset import MultimodalDataset
    from ..model import Batch

    n = min(num_images, len(data))
    if isinstance(data, MultimodalDataset):
        part = data.subset(torch.arange(n))
    else:
        part = Batch({k: v[:n] for k, v in data.data.items()}, None if data.present is None else data.present[:n])
    rows = {"data": part.data[modality]}
    for given in given_sets:
        rows["from " + "+".join(given)] = generate(model, part, list(given), names=[modality], seed=seed)[modality]
    shape = image_shape or model.modalities[modality].shape
    return image_grid(rows, path, image_shape=shape)
