"""PNG figures of T1/T2/M0 maps: one panel per map, with colour bars, one file per slice.

Windows are fixed for T1 (0–3000 ms) and T2 (0–300 ms), the display windows the gadget writes
into the maps' meta (:data:`drone_gadgets.recon.stages.MAP_INFO`), so that slices and scans compare;
M0's is 0 … its 99th percentile over the foreground of all the slices drawn. Background (0) is
drawn black. Matplotlib's object API with the Agg canvas is used (no pyplot state, no display
needed, safe in threads).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["MAP_STYLE", "map_windows", "save_slice_png", "save_map_pngs", "require_matplotlib"]

#: Per map: (title, colour-bar label, colour map, fixed window (low, high) or None for data-driven).
MAP_STYLE: Mapping[str, tuple[str, str, str, tuple[float, float] | None]] = {
    "t1": ("T1", "T1 (ms)", "inferno", (0.0, 3000.0)),
    "t2": ("T2", "T2 (ms)", "viridis", (0.0, 300.0)),
    "m0": ("M0", "M0 (a.u.)", "gray", None),
    "t1_sd": ("T1 sd", "predicted sd of T1 (ms)", "magma", None),
    "t2_sd": ("T2 sd", "predicted sd of T2 (ms)", "magma", None),
    "fit": ("fit", "residual / noise", "cividis", (0.0, 4.0)),
}


def require_matplotlib() -> Any:
    """Import matplotlib (Agg) or raise an ImportError saying what to install."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is in the package's extras
        raise ImportError("PNG figures need matplotlib: pip install 'drone-gadgetron[replay]' "
                          "(or pip install matplotlib)") from None
    return matplotlib


def map_windows(slices: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Display window ``(low, high)`` of each map present in ``slices`` (``{slice: {name: (y, x)}}``)."""
    names = sorted({name for maps in slices.values() for name in maps}, key=list(MAP_STYLE).index)
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        fixed = MAP_STYLE[name][3]
        if fixed is not None:
            out[name] = fixed
            continue
        values = np.concatenate([np.asarray(m[name], dtype=np.float64).ravel() for m in slices.values() if name in m])
        values = values[np.isfinite(values) & (values > 0)]
        high = float(np.percentile(values, 99)) if values.size else 1.0
        out[name] = (0.0, high if high > 0 else 1.0)
    return out


def save_slice_png(path: str | os.PathLike[str], maps: Mapping[str, np.ndarray], *, title: str = "",
                   windows: Mapping[str, tuple[float, float]] | None = None, dpi: int = 100) -> Path:
    """One slice's maps side by side (T1, T2, M0 — those present) with colour bars, as a PNG.

    Args:
        path: the PNG to write (its folder must exist).
        maps: ``{"t1": (y, x), "t2": (y, x), "m0": (y, x)}`` (any subset, at least one).
        title: the figure's title.
        windows: ``{name: (low, high)}``; default :func:`map_windows` of this slice alone.
        dpi: resolution (each panel is about 3.2 inches wide).
    """
    matplotlib = require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in MAP_STYLE if n in maps]
    if not names:
        raise ValueError(f"maps: expected some of {', '.join(MAP_STYLE)}, got {', '.join(maps) or 'none'}")
    windows = dict(windows) if windows is not None else map_windows({0: maps})
    first = np.asarray(maps[names[0]])
    y, x = first.shape[-2:]
    width = 3.2 * len(names)
    height = min(max(2.4, 2.9 * y / max(x, 1) + 0.5), 8.0)
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        label, bar_label, cmap, _ = MAP_STYLE[name]
        data = np.asarray(maps[name], dtype=np.float32).reshape(y, x)
        shown = np.ma.masked_where(~np.isfinite(data) | (data == 0), data)  # background: 0 (or NaN)
        low, high = windows[name]
        colours = matplotlib.colormaps[cmap].with_extremes(bad="black")
        im = ax.imshow(shown, cmap=colours, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(bar_label)
    if title:
        fig.suptitle(title)
    out = Path(path)
    fig.savefig(out, format="png", facecolor="white")
    return out


def save_map_pngs(slices: Mapping[int, Mapping[str, np.ndarray]], out_dir: str | os.PathLike[str], *,
                  prefix: str = "maps", title: str = "DRONE") -> list[Path]:
    """One PNG per slice, ``<out_dir>/<prefix>_slice<NNN>.png``, with common windows.

    Args:
        slices: ``{slice index: {"t1": (y, x), "t2": …, "m0": …}}``.
        out_dir: created if needed.
        prefix: file name prefix.
        title: figure title prefix (the slice index is added).

    Returns:
        the files written, in slice order.
    """
    require_matplotlib()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    windows = map_windows(slices)
    width = max(3, len(str(max(slices, default=0))))
    return [save_slice_png(folder / f"{prefix}_slice{s:0{width}d}.png", slices[s], title=f"{title} — slice {s}",
                           windows=windows)
            for s in sorted(slices)]
