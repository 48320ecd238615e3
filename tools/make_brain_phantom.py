#!/usr/bin/env python3
"""Make ``drone_core/phantom_data/brain_mni152_128.npz``: a WM/GM/CSF label map of a few axial
brain slices, from the MNI152 (ICBM 2009a, non-linear symmetric) templates that the ``nilearn``
wheel ships (no download: it works offline).

    python -m venv /tmp/nilearn-venv && /tmp/nilearn-venv/bin/pip install nilearn scipy
    HF_HUB_OFFLINE=1 /tmp/nilearn-venv/bin/python tools/make_brain_phantom.py

(``nilearn`` is needed only here, never by the package; a separate environment keeps its
dependencies — pandas, scikit-learn … — out of the project's.)

What it does
------------
1. Loads the 1 mm grey- and white-matter probability templates
   (``nilearn.datasets.load_mni152_gm_template`` / ``load_mni152_wm_template``, rescaled by
   nilearn to a maximum of 1) and the whole-brain mask (``load_mni152_brain_mask``: the T1
   template > 0.2), with the holes of each axial plane of the mask filled.
2. CSF probability = mask − GM − WM, clipped to [0, 1] (the templates hold no CSF map).
3. For each slice centre (MNI z, mm) the three probabilities (times the mask) and the mask are
   averaged over the slab of the slice thickness (5 mm: five 1 mm planes) and over 2 × 2 in-plane
   blocks, giving 2 mm pixels on a 256 mm × 256 mm field of view centred on the MNI origin (to
   within 0.5 mm: the block grid cannot be centred exactly on 1 mm voxel centres) — the DRONE
   paper's 128 × 128 matrix, 2 × 2 mm² pixels and 5 mm slices.
4. Label of a pixel: 0 (outside) where less than half of it is inside the mask, else the argmax
   of (CSF, GM, WM) → 1, 2, 3 (BrainWeb's label order).
5. Orientation: rows run anterior → posterior and columns patient right → left (radiological
   display, row 0 at the top): ISMRMRD/DICOM patient axes (LPS) read_dir = (1, 0, 0),
   phase_dir = (0, 1, 0), slice_dir = (0, 0, 1).

The npz holds ``labels`` (uint8, ``(n_slices, 128, 128)``), ``slice_z_mm`` (MNI z of each slice
centre, inferior → superior), ``label_names``, ``pixel_mm``, ``fov_mm``, ``slice_thickness_mm``
and ``provenance`` (a text that says all of the above, with the nilearn version and the credit).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

#: MNI z (mm) of the slice centres: through the lateral ventricles (inferior → superior).
DEFAULT_SLICES_Z_MM = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
MATRIX = 128
PIXEL_MM = 2.0
SLICE_THICKNESS_MM = 5.0
LABEL_NAMES = ("background", "CSF", "GM", "WM")
OUT_DEFAULT = Path(__file__).resolve().parents[1] / "drone_core" / "phantom_data" / "brain_mni152_128.npz"

CREDIT = (
    "Anatomy: the MNI ICBM152 2009a non-linear symmetric template (grey- and white-matter probability maps "
    "and T1-derived brain mask) as shipped in the nilearn Python package. Fonov V.S., Evans A.C., McKinstry "
    "R.C., Almli C.R., Collins D.L., 'Unbiased nonlinear average age-appropriate brain templates from birth to "
    "adulthood', NeuroImage 47 S102 (2009); Fonov V., Evans A.C., Botteron K., Almli C.R., McKinstry R.C., "
    "Collins D.L., 'Unbiased average age-appropriate atlases for pediatric studies', NeuroImage 54(1) 313-327 "
    "(2011); Collins D.L., Zijdenbos A.P., Baaré W.F.C., Evans A.C., 'ANIMAL+INSECT: Improved Cortical "
    "Structure Segmentation', IPMI 1999. Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
    "Centre, Montreal Neurological Institute, McGill University; distributed under the template's permissive "
    "licence (use, copy, modify and distribute with the copyright notice retained; no warranty)."
)


def _fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    out = np.empty_like(mask)
    for k in range(mask.shape[2]):
        out[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return out


def _block_mean(plane: np.ndarray, factor: int) -> np.ndarray:
    """``(n·f, m·f)`` → ``(n, m)`` means of ``f × f`` blocks."""
    n, m = plane.shape[0] // factor, plane.shape[1] // factor
    return plane[:n * factor, :m * factor].reshape(n, factor, m, factor).mean(axis=(1, 3))


def _to_display(vol_ij: np.ndarray, affine: np.ndarray, fov_mm: float) -> np.ndarray:
    """A plane ``(i, j)`` of a 1 mm RAS volume → ``(rows A→P, columns R→L)`` on a square grid of
    ``fov_mm`` 1 mm pixels centred on the MNI origin (zero outside the volume)."""
    n = int(round(fov_mm))
    # 1 mm voxel centres of the output grid, in MNI mm: x from +n/2 (right) down, y from +n/2 (anterior) down.
    coords = np.arange(n) - n // 2  # -128 … 127
    x_mm = -coords  # column c: patient right → left means decreasing RAS x
    y_mm = -coords  # row r: anterior → posterior means decreasing RAS y
    i = np.rint((x_mm - affine[0, 3]) / affine[0, 0]).astype(int)
    j = np.rint((y_mm - affine[1, 3]) / affine[1, 1]).astype(int)
    out = np.zeros((n, n), dtype=np.float64)
    vi = (i >= 0) & (i < vol_ij.shape[0])
    vj = (j >= 0) & (j < vol_ij.shape[1])
    out[np.ix_(vj, vi)] = vol_ij[np.ix_(i[vi], j[vj])].T
    return out


def make(slices_z_mm: tuple[float, ...] = DEFAULT_SLICES_Z_MM) -> dict[str, np.ndarray]:
    """The label map and its provenance (see the module docstring)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import nilearn
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    affine = np.asarray(mask_img.affine)
    for img in (gm_img, wm_img):
        if not np.allclose(np.asarray(img.affine), affine):
            raise RuntimeError("the nilearn templates do not share one grid")
    axes = np.diag(affine)[:3]
    if not np.allclose(np.abs(axes), 1.0) or not np.allclose(affine[:3, :3], np.diag(axes)):
        raise RuntimeError(f"expected 1 mm axis-aligned templates, got affine {affine.tolist()}")
    if not np.all(np.diag(affine)[:3] > 0):
        raise RuntimeError(f"expected RAS+ templates, got affine {affine.tolist()}")
    gm = np.asarray(gm_img.dataobj, dtype=np.float64)
    wm = np.asarray(wm_img.dataobj, dtype=np.float64)
    mask = _fill_holes_axial(np.asarray(mask_img.dataobj) > 0).astype(np.float64)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)

    fov_mm = MATRIX * PIXEL_MM
    factor = int(round(PIXEL_MM))
    half = int(round(SLICE_THICKNESS_MM)) // 2
    labels = np.zeros((len(slices_z_mm), MATRIX, MATRIX), dtype=np.uint8)
    for s, z_mm in enumerate(slices_z_mm):
        k0 = int(round((z_mm - affine[2, 3]) / affine[2, 2]))
        ks = range(k0 - half, k0 + half + 1)  # 5 planes = 5 mm
        if ks.start < 0 or ks.stop > mask.shape[2]:
            raise ValueError(f"slice at MNI z = {z_mm} mm is outside the template")
        probs = []
        for vol in (mask, csf * mask, gm * mask, wm * mask):
            slab = np.mean([_to_display(vol[:, :, k], affine, fov_mm) for k in ks], axis=0)
            probs.append(_block_mean(slab, factor))
        inside, tissue = probs[0], np.stack(probs[1:])
        lab = (np.argmax(tissue, axis=0) + 1).astype(np.uint8)
        lab[inside < 0.5] = 0
        labels[s] = lab

    provenance = (
        f"Made by tools/make_brain_phantom.py with nilearn {nilearn.__version__} (offline templates). "
        f"Axial slices of {SLICE_THICKNESS_MM:g} mm centred at MNI z = {list(slices_z_mm)} mm (inferior to "
        f"superior); {MATRIX}x{MATRIX} pixels of {PIXEL_MM:g} mm on a {fov_mm:g} mm square field of view centred "
        "on the MNI origin (to within 0.5 mm); rows anterior->posterior, columns patient right->left "
        "(radiological; LPS read_dir (1,0,0), phase_dir (0,1,0)). Labels 0 outside, 1 CSF, 2 GM, 3 WM: "
        "argmax of slab- and block-averaged probabilities (CSF = brain mask - GM - WM, clipped), 0 where under "
        "half of the pixel is inside the hole-filled brain mask (nilearn's T1 template > 0.2). " + CREDIT
    )
    return {
        "labels": labels,
        "slice_z_mm": np.asarray(slices_z_mm, dtype=np.float32),
        "label_names": np.asarray(LABEL_NAMES),
        "pixel_mm": np.asarray([PIXEL_MM, PIXEL_MM], dtype=np.float32),
        "fov_mm": np.asarray([fov_mm, fov_mm], dtype=np.float32),
        "slice_thickness_mm": np.asarray(SLICE_THICKNESS_MM, dtype=np.float32),
        "provenance": np.asarray(provenance),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT_DEFAULT, help=f"output .npz (default {OUT_DEFAULT})")
    p.add_argument("--slices-z-mm", type=float, nargs="+", default=list(DEFAULT_SLICES_Z_MM),
                   help="MNI z of the slice centres, mm (default %(default)s)")
    args = p.parse_args(argv)
    data = make(tuple(args.slices_z_mm))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    digest = hashlib.sha256(data["labels"].tobytes()).hexdigest()[:16]
    counts = {name: int((data["labels"] == i).sum()) for i, name in enumerate(LABEL_NAMES)}
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); labels {data['labels'].shape} sha256[:16] {digest}; "
          f"voxels {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
