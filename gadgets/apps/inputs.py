"""What a run sends from an ISMRMRD ``.h5`` file: its group, its image vars (frames, B1 maps) or its raw data.

``drone replay`` and ``drone send`` read their input here. :func:`open_input` checks the paths and the
optional outputs' libraries (:func:`check_paths`), chooses the group (:func:`choose_group`: groups
of DRONE maps only, such as ``/<group>_truth``, are set aside), orders the image vars under the
``b1`` setting (B1 map vars first with ``b1=stream``, else not sent) and finds the ISMRMRD header
(a minimal one, with a warning, when the file has none). :func:`open_raw_input` finds raw
acquisitions instead (``drone send`` of a raw scan, for a chain that reconstructs them first).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from ..files.nifti import require_nibabel
from ..recon.settings import GadgetSettings

__all__ = ["InputScan", "RawInput", "check_paths", "choose_group", "open_input", "open_raw_input", "stream_module"]

log = logging.getLogger(__name__)


def stream_module(name: str) -> ModuleType:
    """``drone_gadgets.files.h5io`` (``"h5io"``) or ``drone_gadgets.wire.loopback`` (``"loopback"``); an
    ImportError names the extra to install when ismrmrd/h5py are missing."""
    import importlib

    where = {"h5io": "drone_gadgets.files.h5io", "loopback": "drone_gadgets.wire.loopback"}[name]
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise ImportError(f"drone replay needs ismrmrd and h5py: pip install 'drone-gadgetron[gadgets]' "
                          f"({exc})") from None


def _holds_maps_only(path: Path, group: str, names: Sequence[str]) -> bool:
    """True when every var of ``group`` starts with a DRONE map image (meta ``DRONE_Map``): the
    truth group of ``drone simulate-scan`` (``/<group>_truth``) or an earlier replay's output."""
    import h5py

    with h5py.File(path, "r") as f:
        for name in names:
            attributes = f[group][name]["attributes"]
            first = attributes[0] if attributes.shape and attributes.shape[0] else b""
            text = first.decode("utf-8", errors="replace") if isinstance(first, bytes) else str(first)
            if "<name>DRONE_Map</name>" not in text:
                return False
    return True


def choose_group(path: str | os.PathLike[str], group: str | None = None) -> str:
    """The group to replay: ``group`` if it holds images, else the only group holding frames.

    Without ``group``: the only group holding images; if several do, those whose images are all
    DRONE maps (meta ``DRONE_Map``: the ``<group>_truth`` group of ``drone simulate-scan``, the
    output of a replay) are set aside, and the only one left is chosen. A file whose images are all
    maps (a replay's output; a raw scan's truth beside its acquisitions) has no frames.

    Raises:
        H5FormatError: ``group`` holds no images, or no group or several groups hold frames, or only maps.
    """
    h5io = stream_module("h5io")
    if group is not None:
        if not h5io.list_image_vars(path, group):
            raise h5io.H5FormatError(f"group {group!r} of {str(path)!r} holds no images "
                                     f"(no <var>/header, attributes, data)")
        return group
    found = h5io.image_groups(path)
    frames = {g: v for g, v in found.items() if not _holds_maps_only(Path(path), g, [x.name for x in v])}
    if not frames:
        raw = h5io.acquisition_groups(path)
        hint = (f"; /{', /'.join(raw)} holds raw acquisitions: reconstruct them with Gadgetron first, e.g. "
                f"`drone send {path} OUT.h5 --config-file xml_configs/drone_grappa_epi.xml`" if raw else "")
        if not found:
            raise h5io.H5FormatError(f"{str(path)!r} holds no MRF frames: no images in the ISMRMRD layout "
                                     f"(/<group>/<var>/header, attributes, data); groups: "
                                     f"{', '.join(h5io.list_groups(path)) or 'none'}{hint}")
        raise h5io.H5FormatError(f"{str(path)!r} holds no MRF frames: its images ({', '.join('/' + g for g in found)}) "
                                 f"are all DRONE maps{hint}")
    if len(found) > 1:
        if len(frames) == 1:
            return next(iter(frames))
        listing = "; ".join(f"{g} ({', '.join(v.name for v in vars_)})" for g, vars_ in (frames or found).items())
        raise h5io.H5FormatError(f"{str(path)!r} has images in several groups: {listing}; choose one with "
                                 f"group= (--group)")
    return next(iter(found))


def _slice_count(path: Path, group: str, variables: Sequence[str]) -> int:
    import h5py

    slices: set[int] = set()
    with h5py.File(path, "r") as f:
        for var in variables:
            header = f[group][var]["header"]
            if header.dtype.names and "slice" in header.dtype.names:
                slices.update(int(s) for s in np.unique(header.fields("slice")[:]))
    return max(len(slices), 1)


@dataclass
class InputScan:
    """The frames of an input file, ready to stream (see :func:`open_input`).

    Attributes:
        path: the file; group: the group; variables: its image vars to send, in order; n_frames: images.
        header: the ISMRMRD XML header (the file's, or a minimal one when it has none).
        b1_variables: those of ``variables`` holding B1 maps (sent first, with ``b1=stream``).
        skipped: image vars of the group not sent (B1 maps without ``b1=stream``).
        n_b1: images in ``b1_variables``.
    """

    path: Path
    group: str
    variables: list[str]
    n_frames: int
    header: bytes
    b1_variables: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_b1: int = 0

    def images(self) -> Any:
        """The images, read lazily."""
        h5io = stream_module("h5io")
        return h5io.iter_images(self.path, self.group, self.variables)


def _var_facts(path: Path, group: str, names: Sequence[str]) -> dict[str, tuple[set[int], str]]:
    """``{var: (its image series indices, its first image's DRONE_Map meta or "")}``."""
    import h5py

    out: dict[str, tuple[set[int], str]] = {}
    with h5py.File(path, "r") as f:
        for name in names:
            node = f[group][name]
            header = node["header"]
            series: set[int] = set()
            if header.dtype.names and "image_series_index" in header.dtype.names and header.shape[0]:
                series = {int(v) for v in np.unique(header.fields("image_series_index")[:])}
            attributes = node["attributes"]
            first = attributes[0] if attributes.shape and attributes.shape[0] else b""
            text = first.decode("utf-8", errors="replace") if isinstance(first, bytes) else str(first)
            label = ""
            if "<name>DRONE_Map</name>" in text:
                tail = text.split("<name>DRONE_Map</name>", 1)[1]
                if "<value>" in tail:
                    label = tail.split("<value>", 1)[1].split("</value>", 1)[0].strip()
            out[name] = (series, label)
    return out


def _order_b1(path: Path, group: str, names: list[str], settings: GadgetSettings | None, explicit: bool,
              ) -> tuple[list[str], list[str], list[str]]:
    """``(variables to send, of which B1 maps, skipped)`` under the ``b1`` setting (see the module docstring)."""
    settings = settings or GadgetSettings()
    facts = _var_facts(path, group, names)
    if settings.b1_mode == "stream":
        b1 = [n for n in names if facts[n][0] == {settings.b1_series_index}]
        if explicit:
            return names, b1, []
        for n in names:
            if n not in b1 and facts[n][1].upper() == "B1":
                log.warning("/%s/%s holds B1 maps (DRONE_Map B1) of series %s, not b1_series_index %d: sent as "
                            "frames", group, n, sorted(facts[n][0]), settings.b1_series_index)
        return b1 + [n for n in names if n not in b1], b1, []
    if explicit:
        return names, [], []
    skipped = [n for n in names if facts[n][1].upper() == "B1"]
    if skipped:
        log.info("not sending %s: B1 maps, used only with the property b1=stream (b1 is %r)",
                 ", ".join(f"/{group}/{n}" for n in skipped), settings.b1)
    return [n for n in names if n not in skipped], [], skipped


def check_paths(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, png_dir: Any = None,
                nifti_dir: Any = None) -> tuple[Path, Path]:
    """``(input, output)`` paths, checked: the input exists, the output is not the input, and the optional
    PNG/NIfTI outputs' libraries are installed.

    Raises:
        FileNotFoundError: no input; ValueError: ``out_path`` is ``in_path``; ImportError: PNG/NIfTI output
        without matplotlib/nibabel.
    """
    src, dst = Path(in_path), Path(out_path)
    if not src.is_file():
        raise FileNotFoundError(f"in_path: {str(src)!r} does not exist")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"out_path: {str(dst)!r} is the input file; choose another output file")
    if png_dir is not None:
        from ..files.figures import require_matplotlib

        require_matplotlib()
    if nifti_dir is not None:
        require_nibabel()
    return src, dst


def open_input(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, group: str | None = None,
               variables: Sequence[str] | None = None, png_dir: Any = None, nifti_dir: Any = None,
               settings: GadgetSettings | None = None) -> InputScan:
    """Check the input and output paths and the optional outputs' libraries; find the group, vars and header.

    ``settings`` (default: the defaults) decides what happens to B1 map vars (module docstring):
    sent first with ``b1=stream``, else not sent.

    Raises:
        FileNotFoundError, H5FormatError: the input file, group or vars; ValueError: ``out_path``
        is ``in_path``; ImportError: PNG/NIfTI output without matplotlib/nibabel.
    """
    h5io = stream_module("h5io")
    src, _ = check_paths(in_path, out_path, png_dir=png_dir, nifti_dir=nifti_dir)
    group = choose_group(src, group)
    names = [v.name for v in h5io.list_image_vars(src, group)] if variables is None else list(variables)
    if variables is not None:
        h5io.count_images(src, group, names)  # unknown vars fail here, naming them
    selected, b1_vars, skipped = _order_b1(src, group, names, settings, explicit=variables is not None)
    n_frames = h5io.count_images(src, group, selected)
    if n_frames == 0:
        raise h5io.H5FormatError(f"/{group} of {str(src)!r} holds no images to replay")
    header = h5io.read_xml_header(src, group)
    if header is None:
        first = next(h5io.iter_images(src, group, selected[:1], chunk=1))
        header = h5io.minimal_header_xml(first, n_slices=_slice_count(src, group, selected))
        log.warning("/%s/xml is missing: sending a minimal ISMRMRD header (no sequenceParameters, so the gadget "
                    "cannot check the acquisition's schedule)", group)
    n_b1 = h5io.count_images(src, group, b1_vars) if b1_vars else 0
    return InputScan(src, group, selected, n_frames, header, b1_vars, skipped, n_b1)


@dataclass
class RawInput:
    """The raw acquisitions of an input file, ready to stream (what :func:`open_raw_input` found).

    Attributes:
        path: the file; group: its group with the acquisitions; n_frames: acquisitions (the count the
            progress bar and the summary use); header: the ISMRMRD XML header (``/<group>/xml``).
    """

    path: Path
    group: str
    n_frames: int
    header: bytes
    n_b1: int = 0

    def images(self) -> Any:
        """The acquisitions, read lazily in file order."""
        return stream_module("h5io").iter_acquisitions(self.path, self.group)


def open_raw_input(in_path: str | Path, out_path: str | Path, group: str | None = None, *, png_dir: Any = None,
                   nifti_dir: Any = None) -> RawInput | None:
    """The raw acquisitions to send, or None when the input holds image frames (sent as images).

    Raw means: ``group`` (or, without it, the file's only group with acquisitions) holds acquisitions and
    no image var other than DRONE maps — B1 maps, which the raw chain cannot take (give them to the gadget
    with ``b1=file:``).

    Raises:
        the path errors of :func:`check_paths`; ValueError: a raw group without its
        ISMRMRD header (a reconstruction chain needs the encoding); H5FormatError: several groups hold
        acquisitions and no ``group`` was given.
    """
    h5io = stream_module("h5io")
    src, _ = check_paths(in_path, out_path, png_dir=png_dir, nifti_dir=nifti_dir)
    raw = h5io.acquisition_groups(src)
    if group is not None:
        if group not in raw:
            return None
        chosen = group
    else:
        if not raw:
            return None
        if len(raw) > 1:
            raise h5io.H5FormatError(f"{str(src)!r} has acquisitions in several groups ({', '.join(raw)}); choose "
                                     f"one with --group")
        chosen = next(iter(raw))
    names = [v.name for v in h5io.list_image_vars(src, chosen)]
    if names and not _holds_maps_only(src, chosen, names):
        return None
    header = h5io.read_xml_header(src, chosen)
    if header is None:
        raise ValueError(f"/{chosen}/xml of {str(src)!r} is missing: raw data needs its ISMRMRD header (the encoding "
                         f"the reconstruction reads)")
    return RawInput(src, chosen, raw[chosen], header)
