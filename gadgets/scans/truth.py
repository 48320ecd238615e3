"""The true maps of a simulated scan, in a file beside it: ``scan.h5`` → ``scan_truth.h5``.

The file's layout is :mod:`drone_gadgets.scans.layout`'s.

:func:`truth_arrays` checks the maps given (``t1``, ``t2`` in ms, ``m0``, ``labels``, ``b1`` relative),
:func:`write_truth` writes them with the scan's header and geometry, :func:`read_truth` reads them back
(by slice), so that a reconstruction can be compared with what was simulated.
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from typing import Any, Mapping, Sequence

import numpy as np

from pathlib import Path

from .layout import TRUTH_SERIES, TRUTH_SUFFIX, open_for_reading, truth_path

__all__ = ["truth_arrays", "write_truth", "read_truth"]


def truth_arrays(truth: Mapping[str, Any] | None, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """``truth`` checked against the frames' ``shape`` ``(z, y, x)``: ``{name: (z, y, x) float32}`` ({} for None)."""
    if truth is None:
        return {}
    if not isinstance(truth, Mapping):
        raise TypeError(f"truth: expected a dict of maps or None, got {type(truth).__name__}")
    out = {}
    for key, value in truth.items():
        if key not in TRUTH_SERIES:
            raise ValueError(f"truth: unknown map {key!r}; expected keys among {list(TRUTH_SERIES)}")
        arr = np.asarray(value)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape != shape or arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
            raise ValueError(f"truth[{key!r}]: expected finite real values of shape {shape} (z, y, x) like the "
                             f"frames, got {arr.dtype} {arr.shape}")
        out[key] = arr.astype(np.float32)
    return out


def write_truth(path: str | os.PathLike[str], group: str, xml: bytes | str, truth_maps: Mapping[str, np.ndarray],
                geometry: Any, tissues: Mapping[int, Sequence[Any]] | None = None) -> None:
    """Write the true maps to ``/<group>`` of the scan's truth file (:func:`~drone_gadgets.scans.layout.truth_path`).

    Args:
        path, group: the scan's file and group.
        xml: the scan's header, stored with the truth too.
        truth_maps: from :func:`truth_arrays`: ``{"t1", "t2", "m0", "labels", "b1"}`` (any), each ``(z, y, x)``.
        geometry: ``slice → ismrmrd.ImageHeader`` with the slice's geometry.
        tissues: label → ``(name, t1_ms, t2_ms, m0)``, into the label map's meta ``DRONE_Tissues``.
    """
    if not truth_maps:
        return
    import ismrmrd

    from ..recon.conversion import make_image

    table = {} if tissues is None else {str(int(k)): list(v) for k, v in tissues.items()}
    with closing(ismrmrd.Dataset(str(truth_path(path)), group, create_if_needed=True)) as ds:
        ds.write_xml_header(xml)
        for key, data in truth_maps.items():
            series, label, units = TRUTH_SERIES[key]
            for s in range(data.shape[0]):
                meta: dict[str, str] = {"DRONE_Map": label, "Units": units, "DataRole": "Quantitative",
                                        "ImageComments": f"DRONE simulation truth: {label}"}
                if key == "labels" and table:
                    meta["DRONE_Tissues"] = json.dumps(table)
                ds.append_image(key, make_image(data[s], geometry(s), image_series_index=series,
                                                image_index=s + 1, meta=meta))


def read_truth(path: str | os.PathLike[str], group: str = "dataset") -> dict[str, np.ndarray]:
    """The true maps of the scan ``path``: ``{name: (z, y, x) float32}`` (by slice counter): ``t1``, ``t2`` (ms),
    ``m0``, ``labels`` and, for a scan with a B1 map, ``b1`` (relative B1). From its truth file, or, for files
    written before the truth had a file of its own, from ``/<group>_truth`` of the scan file.

    Raises:
        FileNotFoundError, LookupError: no truth file and no truth group.
    """
    out: dict[str, np.ndarray] = {}
    separate = truth_path(path)
    source, source_group = (separate, group) if separate.is_file() or not Path(path).is_file() else (
        Path(path), group + TRUTH_SUFFIX)
    with closing(open_for_reading(source, source_group)) as ds:
        for key in TRUTH_SERIES:
            if key not in ds.list():
                continue
            images = [ds.read_image(key, i) for i in range(ds.number_of_images(key))]
            images.sort(key=lambda im: int(im.getHead().slice))
            out[key] = np.stack([np.asarray(im.data)[0, 0] for im in images]).astype(np.float32)
    return out
