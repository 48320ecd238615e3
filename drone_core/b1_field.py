"""Smooth transmit fields B1⁺ for simulated scans: the centre-bright pattern of a head at 3 T.

At 3 T the RF wavelength in tissue (≈ 12 cm) is comparable to the head, and a birdcage coil's
transmit field is brighter in the middle of the brain than at its periphery (relative B1 ≈ 1.2 in
the centre, ≈ 0.7–0.8 at the cortex). :func:`b1_field` is a smooth stand-in for that pattern — not
an electromagnetic simulation — with an elliptical Gaussian profile::

    B1(y, x, z) = centre · (edge / centre) ** ρ²,
    ρ² = ((y − y0) / r_y)² + ((x − x0) / r_x)² + ((z − z0) / r_z)²,

so B1 = ``centre`` at the field's maximum ``(y0, x0, z0)`` and B1 = ``edge`` on the ellipse
ρ = 1 (semi-axes ``radius_mm``; for :func:`head_b1_field` the head's extent), falling on
smoothly outside it (always > 0). Relative B1 is the actual flip angle over the nominal one
(unitless; 1 = nominal). The through-slice term (``z_radius_mm``) is gentle: over a few 5 mm
slices near the centre it changes B1 by about a percent.

``step`` rounds the field to multiples of it (e.g. 0.001, 0.1 %: finer than any measured B1 map,
whose precision is a few percent, and what a map stored as integer per-mille holds). Besides being
what a scanner stores, it lets :func:`drone_core.phantoms.simulate_frames` simulate each distinct
(T1, T2, B1) once — a few hundred B1 levels per tissue instead of one per voxel, ≈ 10× faster for a
brain slice with the slice profile.

Coordinates are the phantoms' (:mod:`drone_core.phantoms`): mm from the centre of the field of
view, pixel centres at ``(j + ½ − n/2)·Δ``; rows ``y`` run down the displayed image (posterior),
columns ``x`` to its right (the patient's left); ``z`` along the slice direction (the phantom's
``slice_positions_mm``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .validation import finite_number

if TYPE_CHECKING:  # pragma: no cover
    from .phantoms import Phantom

__all__ = [
    "b1_field",
    "head_b1_field",
    "B1_3T_CENTRE",
    "B1_3T_EDGE",
    "B1_3T_OFFSET_FRACTION",
    "B1_3T_Z_RADIUS_MM",
    "B1_MAP_STEP",
]

#: Relative B1 in the middle of the head at 3 T (typical birdcage head coil: ≈ 1.1–1.3).
B1_3T_CENTRE = 1.2
#: Relative B1 at the edge of the head at 3 T (≈ 0.7–0.8 at the cortex).
B1_3T_EDGE = 0.8
#: Offset of the field's maximum from the head's centre, as a fraction of its semi-axes ``(y, x)``:
#: real fields are not symmetric (coil loading, head position); a small, fixed asymmetry.
B1_3T_OFFSET_FRACTION: tuple[float, float] = (-0.06, 0.05)
#: Distance along the slice direction over which B1 falls from ``centre`` to ``edge``, mm (about the
#: head's superior–inferior half-length: B1 drops towards the vertex and the cerebellum).
B1_3T_Z_RADIUS_MM = 100.0
#: Resolution of a simulated B1 map (relative B1): 0.001 = 0.1 % of nominal.
B1_MAP_STEP = 0.001


def _positive(value: float, name: str) -> float:
    v = finite_number(value, name)
    if not v > 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return v


def _pair(values: Sequence[float] | None, name: str, *, positive: bool) -> tuple[float, float]:
    try:
        items = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected two numbers (y, x) in mm, got {values!r}") from None
    ok = len(items) == 2 and all(math.isfinite(v) and (v > 0 or not positive) for v in items)
    if not ok:
        kind = "positive numbers" if positive else "finite numbers"
        raise ValueError(f"{name}: expected two {kind} (y, x) in mm, got {values!r}")
    return items[0], items[1]


def b1_field(shape: Sequence[int], *, centre: float = B1_3T_CENTRE, edge: float = B1_3T_EDGE,
             fov_mm: Sequence[float] = (256.0, 256.0), radius_mm: Sequence[float] | None = None,
             offset_mm: Sequence[float] = (0.0, 0.0), slice_positions_mm: Sequence[float] | None = None,
             z_centre_mm: float = 0.0, z_radius_mm: float | None = B1_3T_Z_RADIUS_MM,
             step: float | None = None) -> np.ndarray:
    """A smooth centre-bright relative B1 map (module docstring: the profile and the coordinates).

    Args:
        shape: ``(y, x)`` or ``(z, y, x)``.
        centre: relative B1 at the field's maximum (> 0; 1.2 at 3 T).
        edge: relative B1 on the ellipse of semi-axes ``radius_mm`` around it (> 0; 0.8 at 3 T).
            ``edge > centre`` gives a centre-dark field.
        fov_mm: field of view ``(y, x)`` of the whole matrix, mm.
        radius_mm: semi-axes ``(r_y, r_x)`` of the ellipse where B1 = ``edge``, mm; default half the
            field of view (B1 = ``edge`` at the middle of each side of the image).
        offset_mm: ``(y0, x0)``: position of the maximum relative to the centre of the field of view, mm.
        slice_positions_mm: ``(z,)`` slice centres along the slice direction, mm; default contiguous
            5 mm slices centred on 0 (a phantom's default). Ignored for a 2-D ``shape``.
        z_centre_mm: ``z0``, the slice position of the maximum, mm.
        z_radius_mm: ``r_z``, mm (> 0), or None for no through-slice variation.
        step: round the field to multiples of this relative B1 (> 0, e.g. :data:`B1_MAP_STEP`), or None
            for the continuous field. Values that would round to 0 get ``step``.

    Returns:
        float64 relative B1 of ``shape``, every value finite and > 0.
    """
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape: expected (y, x) or (z, y, x) ints, got {shape!r}") from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(f"shape: expected (y, x) or (z, y, x) with every size ≥ 1, got {shape!r}")
    c, e = _positive(centre, "centre"), _positive(edge, "edge")
    fov = _pair(fov_mm, "fov_mm", positive=True)
    radius = (fov[0] / 2.0, fov[1] / 2.0) if radius_mm is None else _pair(radius_mm, "radius_mm", positive=True)
    y0, x0 = _pair(offset_mm, "offset_mm", positive=False)
    if not math.isfinite(float(z_centre_mm)):
        raise ValueError(f"z_centre_mm: expected a finite number, got {z_centre_mm!r}")
    rz = None if z_radius_mm is None else _positive(z_radius_mm, "z_radius_mm")
    quantum = None if step is None else _positive(step, "step")
    ny, nx = dims[-2:]
    y_mm = (np.arange(ny) + 0.5 - ny / 2.0) * fov[0] / ny
    x_mm = (np.arange(nx) + 0.5 - nx / 2.0) * fov[1] / nx
    rho2 = ((y_mm[:, None] - y0) / radius[0]) ** 2 + ((x_mm[None, :] - x0) / radius[1]) ** 2  # (y, x)
    if len(dims) == 3:
        nz = dims[0]
        if slice_positions_mm is None:
            z_mm = (np.arange(nz) - (nz - 1) / 2.0) * 5.0
        else:
            z_mm = np.asarray([float(v) for v in slice_positions_mm], dtype=np.float64)
            if z_mm.shape != (nz,) or not np.isfinite(z_mm).all():
                raise ValueError(f"slice_positions_mm: expected {nz} finite values (one per slice), got "
                                 f"{slice_positions_mm!r}")
        dz2 = np.zeros(nz) if rz is None else ((z_mm - float(z_centre_mm)) / rz) ** 2
        rho2 = rho2[None] + dz2[:, None, None]
    field = c * np.exp(rho2 * math.log(e / c))
    if quantum is not None:
        field = np.maximum(np.round(field / quantum), 1.0) * quantum
    return field


def head_b1_field(phantom: "Phantom", *, centre: float = B1_3T_CENTRE, edge: float = B1_3T_EDGE,
                  offset_fraction: Sequence[float] = B1_3T_OFFSET_FRACTION, z_centre_mm: float = 0.0,
                  z_radius_mm: float | None = B1_3T_Z_RADIUS_MM, step: float | None = None) -> np.ndarray:
    """A 3 T-like field fitted to a phantom's head: :func:`b1_field` with the ellipse at the head's edge.

    The ellipse's semi-axes are half the in-plane extent of the phantom's non-air voxels (over all
    slices, pixel edges included) and its centre is the middle of that extent shifted by
    ``offset_fraction`` × the semi-axes. So B1 ≈ ``centre`` in the middle of the head and ≈ ``edge`` at
    its outline (a little below on one side, above on the other, with an offset).

    Args:
        phantom: a :class:`drone_core.phantoms.Phantom` with at least one non-air voxel.
        centre, edge: relative B1 at the maximum and on the head's outline (> 0).
        offset_fraction: ``(y, x)`` offset of the maximum, fractions of the semi-axes.
        z_centre_mm, z_radius_mm, step: as in :func:`b1_field` (z along the phantom's ``slice_positions_mm``).

    Returns:
        float64 relative B1 of ``phantom.shape`` (``(z, y, x)`` or ``(y, x)``).
    """
    from .phantoms import Phantom

    if not isinstance(phantom, Phantom):
        raise TypeError(f"phantom: expected drone_core.phantoms.Phantom, got {type(phantom).__name__}")
    fy, fx = _pair(offset_fraction, "offset_fraction", positive=False)
    labels = phantom.labels if phantom.labels.ndim == 3 else phantom.labels[None]
    tissue = (labels != 0).any(axis=0)  # (y, x)
    if not tissue.any():
        raise ValueError("phantom: it has no non-air voxel to fit the field to")
    ny, nx = phantom.matrix
    dy, dx = phantom.pixel_mm
    rows, cols = np.nonzero(tissue.any(axis=1))[0], np.nonzero(tissue.any(axis=0))[0]
    # Extent from the first to the last tissue pixel, edges included, in the phantoms' coordinates.
    y_lo, y_hi = (rows[0] - ny / 2.0) * dy, (rows[-1] + 1 - ny / 2.0) * dy
    x_lo, x_hi = (cols[0] - nx / 2.0) * dx, (cols[-1] + 1 - nx / 2.0) * dx
    ry, rx = (y_hi - y_lo) / 2.0, (x_hi - x_lo) / 2.0
    offset = ((y_lo + y_hi) / 2.0 + fy * ry, (x_lo + x_hi) / 2.0 + fx * rx)
    return b1_field(phantom.shape, centre=centre, edge=edge, fov_mm=phantom.fov_mm, radius_mm=(ry, rx),
                    offset_mm=offset, slice_positions_mm=phantom.slice_positions_mm if phantom.labels.ndim == 3
                    else None, z_centre_mm=z_centre_mm, z_radius_mm=z_radius_mm, step=step)
