"""Where the maps a gadget sends back go: the output ``.h5``, and PNG and NIfTI files beside it.

:func:`write_outputs` writes the map images a run received (``drone replay``, ``drone send``) into
``OUT.h5`` the way Gadgetron's client stores them (``/<group>/image_<image_series_index>``,
:mod:`drone_gadgets.files.h5io`), and optionally one PNG per slice
(:mod:`drone_gadgets.files.figures`) and one NIfTI file per map (:mod:`drone_gadgets.files.nifti`);
:func:`maps_by_slice` sorts the images into maps by their meta ``DRONE_Map`` or series index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..files.nifti import save_nifti
from ..recon.settings import MAP_NAMES, GadgetSettings
from .inputs import stream_module

if TYPE_CHECKING:  # the modules needing the `gadgets` extra are imported when used (`drone --help` works without)
    import ismrmrd

__all__ = ["OUTPUT_MAPS", "Outputs", "maps_by_slice", "write_outputs"]

#: Maps read back from the gadget (the B1 map with ``b1=estimate``), in NIfTI output order.
OUTPUT_MAPS = MAP_NAMES + ("b1",)
#: ``DRONE_Map`` labels (lower case) that are not their map's name.
_MAP_LABELS = {"t1sd": "t1_sd", "t2sd": "t2_sd"}


def maps_by_slice(images: Sequence[ismrmrd.Image], settings: GadgetSettings | None = None,
                  ) -> dict[int, dict[str, tuple[np.ndarray, ismrmrd.ImageHeader]]]:
    """``{slice: {"t1"|"t2"|"m0"|…: ((z, y, x) float32 data, header)}}`` of the gadget's map images.

    A map is recognised by its meta ``DRONE_Map`` (``T1``, ``T2``, ``M0``, ``B1``, ``T1SD``, ``T2SD``, ``FIT``), else
    by its ``image_series_index`` under ``settings`` (other images are ignored). B1 maps (``b1=estimate``)
    are in percent of nominal.
    """
    by_series = {index: name for name, index in (settings or GadgetSettings()).series_index.items()}
    out: dict[int, dict[str, tuple[np.ndarray, ismrmrd.ImageHeader]]] = {}
    for image in images:
        label = image.meta.get("DRONE_Map") if hasattr(image, "meta") else None
        name = _MAP_LABELS.get(str(label).lower(), str(label).lower()) if label else by_series.get(
            int(image.image_series_index))
        if name not in OUTPUT_MAPS:
            continue
        out.setdefault(int(image.slice), {})[name] = (np.asarray(image.data)[0], image.getHead())
    return dict(sorted(out.items()))


@dataclass
class Outputs:
    """What :func:`write_outputs` wrote."""

    group: str
    slices: int
    series: dict[str, int]
    png_files: list[Path]
    nifti_files: list[Path]


def write_outputs(images: Sequence[ismrmrd.Image], out_path: str | os.PathLike[str], *, header: bytes,
                  settings: GadgetSettings, out_group: str, png_dir: Any = None, nifti_dir: Any = None) -> Outputs:
    """Write received map images to ``out_path`` (``/<out_group>/image_<series>``), and PNG/NIfTI files."""
    h5io = stream_module("h5io")
    dst = Path(out_path)
    slices = maps_by_slice(images, settings)
    series = h5io.write_images(dst, images, group=out_group, xml_header=header)
    pngs: list[Path] = []
    niftis: list[Path] = []
    if png_dir is not None and slices:
        from ..files.figures import save_map_pngs

        pngs = save_map_pngs({s: {n: d for n, (d, _) in m.items() if n in MAP_NAMES} for s, m in slices.items()},
                             png_dir, prefix=dst.stem)
    if nifti_dir is not None and slices:
        niftis = save_nifti(slices, nifti_dir, prefix=dst.stem, names=OUTPUT_MAPS)
    return Outputs(out_group, len(slices), series, pngs, niftis)
