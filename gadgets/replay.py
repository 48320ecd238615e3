"""Replay an ISMRMRD ``.h5`` file through the ``drone_mrf`` gadget, exactly as Gadgetron runs it.

``drone replay IN.h5 OUT.h5`` reads the images (the magnitude frames of an MRF scan) of one group
of ``IN.h5``, starts the real gadget process the way Gadgetron starts an ``<external>`` node
(``python -m gadgetron <port> drone_gadgets.gadget drone_mrf``, :mod:`drone_gadgets.loopback`),
sends it CONFIG (the settings as the chain's ``<configuration>``), the file's XML header, the
images and CLOSE, and writes the T1/T2/M0 map images it sends back into ``OUT.h5`` the way
Gadgetron's client stores them (``/<group>/image_<image_series_index>``, :mod:`drone_gadgets.h5io`).
Optionally it also writes one PNG per slice (:mod:`drone_gadgets.figures`) and one NIfTI file per
map (:func:`save_nifti`).

B1 maps: a scan may carry its B1 map as its own image var (``drone simulate-scan`` writes
``image_5``: series 5, meta ``DRONE_Map`` = ``B1``). With the property ``b1=stream`` the vars whose
images are all of series ``b1_series_index`` are the B1 maps: they are sent first, then the frames
(so no slice waits for its B1 map). With any other ``b1`` the vars of images marked as B1 maps
(``DRONE_Map`` = ``B1``) are not sent (they are not frames). Given ``variables`` are sent as given.

Nothing is written unless the gadget succeeds: a failure it reports (a schedule mismatch, a
missing frame …) raises :class:`~drone_gadgets.loopback.GadgetError` with the gadget's own message,
and ``OUT.h5`` is left as it was.

Python::

    from drone_gadgets.replay import replay
    result = replay("scan.h5", "maps.h5", settings={"device": "cpu"}, png_dir="png")
    print(result.summary())
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .settings import MAP_NAMES, GadgetSettings, settings_from_properties

if TYPE_CHECKING:  # the modules needing the `gadgets` extra are imported when used (`drone --help` works without)
    import ismrmrd

__all__ = [
    "ReplayResult",
    "replay",
    "choose_group",
    "maps_by_slice",
    "nifti_affine",
    "save_nifti",
    "InputScan",
    "Outputs",
    "open_input",
    "write_outputs",
    "progress_bar",
    "add_arguments",
    "parse_property_args",
    "run",
    "PROGRESS_MIN_FRAMES",
]

log = logging.getLogger(__name__)

#: The progress bar is shown for inputs of at least this many frames (2 slices of 25).
PROGRESS_MIN_FRAMES = 50
_IMAGE = 1022  # message id of an image
#: Maps read back from the gadget (the B1 map with ``b1=estimate``), in NIfTI output order.
_OUTPUT_MAPS = MAP_NAMES + ("b1",)
#: ``DRONE_Map`` labels (lower case) that are not their map's name.
_MAP_LABELS = {"t1sd": "t1_sd", "t2sd": "t2_sd"}


def _stream_modules() -> tuple[Any, Any]:
    """``(h5io, loopback)``; an ImportError names the extra to install when ismrmrd/h5py are missing."""
    try:
        from . import h5io, loopback
    except ImportError as exc:
        raise ImportError(f"drone replay needs ismrmrd and h5py: pip install 'drone-gadgetron[gadgets]' "
                          f"({exc})") from None
    return h5io, loopback


# =========================================================================== result
@dataclass
class ReplayResult:
    """What :func:`replay` did.

    Attributes:
        in_path, out_path: the files.
        group: the input group replayed; out_group: the group written.
        frames: images sent to the gadget.
        maps: images received (and written).
        slices: slices with maps.
        series: ``{var name: images}`` written, e.g. ``{"image_100": 20, …}``.
        seconds: wall time of the whole replay (reading, gadget, writing, figures).
        gadget_seconds: from starting the gadget process to its exit (interpreter, imports, model).
        stream_seconds: from the first frame sent to the gadget's CLOSE.
        png_files, nifti_files: extra outputs.
        gadget_log: the gadget process's stderr.
        b1_images: of the images sent, the B1 map images (``b1=stream``).
        raw: ``frames`` counts raw acquisitions (``drone send`` of raw data), not images.
    """

    in_path: Path
    out_path: Path
    group: str
    out_group: str
    frames: int
    maps: int
    slices: int
    series: dict[str, int]
    seconds: float
    gadget_seconds: float
    stream_seconds: float
    png_files: list[Path] = field(default_factory=list)
    nifti_files: list[Path] = field(default_factory=list)
    gadget_log: str = ""
    b1_images: int = 0
    raw: bool = False

    @property
    def slices_per_second(self) -> float:
        """Slices reconstructed per second of :attr:`seconds`."""
        return self.slices / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """A one-paragraph report for people."""
        vars_ = ", ".join(f"{name} ({n})" for name, n in self.series.items()) or "no images"
        sent = (f"{self.frames - self.b1_images} frames and {self.b1_images} B1 map images" if self.b1_images
                else f"{self.frames} raw acquisitions" if self.raw else f"{self.frames} frames")
        lines = [f"replayed {sent} of /{self.group} in {self.in_path}: {self.slices} slice(s) in "
                 f"{self.seconds:.2f} s ({self.slices_per_second:.1f} slices/s; gadget process "
                 f"{self.gadget_seconds:.2f} s, streaming {self.stream_seconds:.2f} s)",
                 f"wrote {self.maps} map images to {self.out_path} /{self.out_group}: {vars_}"]
        if self.png_files:
            lines.append(f"wrote {len(self.png_files)} PNG(s) to {self.png_files[0].parent}")
        if self.nifti_files:
            lines.append(f"wrote {len(self.nifti_files)} NIfTI file(s): {', '.join(str(p) for p in self.nifti_files)}")
        return "\n".join(lines)


# =========================================================================== helpers
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
    h5io, _ = _stream_modules()
    if group is not None:
        if not h5io.list_image_vars(path, group):
            raise h5io.H5FormatError(f"group {group!r} of {str(path)!r} holds no images "
                                     f"(no <var>/header, attributes, data)")
        return group
    found = h5io.image_groups(path)
    if not found:
        raise h5io.H5FormatError(f"{str(path)!r} holds no images in the ISMRMRD layout "
                                 f"(/<group>/<var>/header, attributes, data); groups: "
                                 f"{', '.join(h5io.list_groups(path)) or 'none'}")
    frames = {g: v for g, v in found.items() if not _holds_maps_only(Path(path), g, [x.name for x in v])}
    if not frames:
        raw = h5io.acquisition_groups(path)
        hint = (f"; /{', /'.join(raw)} holds raw acquisitions: reconstruct them with Gadgetron first, e.g. "
                f"`drone send {path} OUT.h5 --config-file xml_configs/drone_grappa_epi.xml`" if raw else "")
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
        if name not in _OUTPUT_MAPS:
            continue
        out.setdefault(int(image.slice), {})[name] = (np.asarray(image.data)[0], image.getHead())
    return dict(sorted(out.items()))


# =========================================================================== NIfTI
def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 0.5 else None


def nifti_affine(headers: Sequence[ismrmrd.ImageHeader]) -> tuple[np.ndarray, list[str]]:
    """The NIfTI (RAS+, mm) affine of a stack of 2-D map images, one per slice, in the given order.

    ISMRMRD positions and directions are in the scanner's patient coordinate system (LPS, as DICOM);
    ``position`` is the centre of the field of view, and voxel ``(i, j)`` lies at
    ``position + (i − x/2)·Δx·read_dir + (j − y/2)·Δy·phase_dir`` (the convention of Gadgetron's
    DICOM writer), Δ = field of view / matrix. The slice axis is the step between consecutive
    positions when they are evenly spaced, else ``slice_dir`` × the slice thickness (with a note).
    Directions that are not unit vectors (files without geometry) fall back to the identity.

    Returns:
        ``(4×4 affine, notes)``: the notes say where the geometry was approximated.
    """
    if not headers:
        raise ValueError("headers: expected at least one image header")
    notes: list[str] = []
    h0 = headers[0]
    read = _unit(np.array(h0.read_dir[:], dtype=np.float64))
    phase = _unit(np.array(h0.phase_dir[:], dtype=np.float64))
    normal = _unit(np.array(h0.slice_dir[:], dtype=np.float64))
    if read is None or phase is None:
        notes.append("the images carry no read/phase directions: identity orientation assumed")
        read, phase, normal = np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]
    if normal is None:
        normal = np.cross(read, phase)
    nx, ny, nz = (max(int(v), 1) for v in h0.matrix_size)
    fov = np.array(h0.field_of_view[:], dtype=np.float64)
    dx = fov[0] / nx if fov[0] > 0 else 1.0
    dy = fov[1] / ny if fov[1] > 0 else 1.0
    thickness = fov[2] / nz if fov[2] > 0 else 1.0
    positions = np.array([h.position[:] for h in headers], dtype=np.float64)
    step = normal * thickness
    if len(headers) > 1:
        steps = np.diff(positions, axis=0)
        mean = steps.mean(axis=0)
        if np.linalg.norm(mean) > 1e-6 and np.all(np.linalg.norm(steps - mean, axis=1) <= 1e-3 * np.linalg.norm(mean)
                                                   + 1e-3):
            step = mean
        else:
            notes.append("the slices are not evenly spaced along one line: the slice axis is slice_dir × the "
                         "slice thickness, and positions are approximate")
    lps = np.eye(4)
    lps[:3, 0] = dx * read
    lps[:3, 1] = dy * phase
    lps[:3, 2] = step
    lps[:3, 3] = positions[0] - (nx / 2) * dx * read - (ny / 2) * dy * phase
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, notes


def _require_nibabel() -> Any:
    try:
        import nibabel
    except ImportError:
        raise ImportError("NIfTI output needs nibabel: pip install 'drone-gadgetron[replay]' (or pip install "
                          "nibabel)") from None
    return nibabel


def save_nifti(slices: Mapping[int, Mapping[str, tuple[np.ndarray, ismrmrd.ImageHeader]]],
               out_dir: str | os.PathLike[str], *, prefix: str = "maps") -> list[Path]:
    """One NIfTI-1 file per map, ``<out_dir>/<prefix>_<t1|t2|m0|b1>.nii.gz``: ``(x, y, slices)`` float32.

    Slices are ordered along the slice direction (by the projection of their positions on
    ``slice_dir``); the affine is :func:`nifti_affine`'s (scanner coordinates, RAS+, mm;
    ``qform``/``sform`` code 1). T1 and T2 are in ms, M0 in the input's units, B1 (when
    estimated) in percent of nominal.

    Raises:
        ImportError: nibabel is not installed (names what to install).
        ValueError: no maps, 3-D maps, or slices whose matrices differ.
    """
    nib = _require_nibabel()
    if not slices:
        raise ValueError("slices: no maps to write")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(slices.values()))
    h0 = next(iter(first.values()))[1]
    normal = _unit(np.array(h0.slice_dir[:], dtype=np.float64))
    order = sorted(slices, key=lambda s: (float(np.dot(next(iter(slices[s].values()))[1].position[:], normal))
                                          if normal is not None else 0.0, s))
    headers = [next(iter(slices[s].values()))[1] for s in order]
    affine, notes = nifti_affine(headers)
    for note in notes:
        log.warning("NIfTI geometry: %s", note)
    written = []
    for name in _OUTPUT_MAPS:
        present = [s for s in order if name in slices[s]]
        if not present:
            continue
        if len(present) != len(order):
            raise ValueError(f"map {name!r} is missing for slice(s) {sorted(set(order) - set(present))}")
        planes = []
        for s in order:
            data = np.asarray(slices[s][name][0], dtype=np.float32)
            if data.ndim == 3 and data.shape[0] != 1:
                raise ValueError(f"map {name!r} of slice {s} is 3-D ({data.shape}); NIfTI output expects 2-D maps")
            planes.append(data.reshape(data.shape[-2:]).T)  # (y, x) → (x, y): i along the readout
        shapes = {p.shape for p in planes}
        if len(shapes) != 1:
            raise ValueError(f"map {name!r}: the slices have different matrices {sorted(shapes)}")
        volume = np.stack(planes, axis=-1)
        image = nib.Nifti1Image(volume, affine)
        image.header.set_xyzt_units("mm", "sec")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        unit = {"t1": "ms", "t2": "ms", "b1": "%"}.get(name, "a.u.")
        image.header["descrip"] = f"DRONE {name.upper()} ({unit})".encode()[:79]
        path = folder / f"{prefix}_{name}.nii.gz"
        nib.save(image, str(path))
        written.append(path)
    return written


# =========================================================================== replay
def progress_bar(total: int, enabled: bool, desc: str = "replay") -> Any:
    """A tqdm bar on stderr for ``total`` frames (disabled below :data:`PROGRESS_MIN_FRAMES`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=not enabled or total < PROGRESS_MIN_FRAMES, leave=False, mininterval=0.2)


def replay(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, group: str | None = None,
           settings: Mapping[str, str] | None = None, png_dir: str | os.PathLike[str] | None = None,
           nifti_dir: str | os.PathLike[str] | None = None, progress: bool = True,
           variables: Sequence[str] | None = None, out_group: str | None = None,
           env: Mapping[str, str] | None = None, stall_timeout_s: float | None = None) -> ReplayResult:
    """Replay the images of ``in_path`` through the ``drone_mrf`` gadget; write the maps to ``out_path``.

    Args:
        in_path: an ISMRMRD ``.h5`` with the frames as images (any group, standard layout).
        out_path: the ``.h5`` to write (replaced when the replay succeeds, untouched otherwise).
        group: the input group; None: the only group holding images.
        settings: the gadget's properties (``{"estimator": "dictionary", "device": "cpu", …}``,
            see :data:`drone_gadgets.settings.PROPERTIES`), sent as its ``<configuration>``.
        png_dir: write one PNG per slice there (needs matplotlib).
        nifti_dir: write one NIfTI file per map there (needs nibabel).
        progress: show a progress bar on stderr (for inputs of :data:`PROGRESS_MIN_FRAMES` frames or more).
        variables: the image vars of ``group`` to send (default all, in natural order).
        out_group: the output group (default: ``group``).
        env: extra environment variables for the gadget process.
        stall_timeout_s: fail when the gadget makes no progress for this long (default
            :data:`drone_gadgets.loopback.STALL_TIMEOUT_S`).

    Returns:
        a :class:`ReplayResult`.

    Raises:
        FileNotFoundError, H5FormatError: the input file, group or vars.
        SettingsError: an unknown property or invalid value (checked before the gadget starts).
        ImportError: ismrmrd/h5py missing, or PNG/NIfTI output without matplotlib/nibabel.
        ValueError: the file's ISMRMRD header does not parse, or ``out_path`` is ``in_path``.
        GadgetError: the gadget reported an error (its message in ``gadget_message``).
        LoopbackError: the gadget process failed otherwise (its log in ``stderr``).
    """
    t0 = time.perf_counter()
    h5io, loopback = _stream_modules()
    properties = {str(k): str(v) for k, v in (settings or {}).items()}
    parsed = settings_from_properties(properties)  # fail fast, before any process starts
    source = open_input(in_path, out_path, group=group, variables=variables, png_dir=png_dir, nifti_dir=nifti_dir,
                        settings=parsed)
    loopback.check_header(source.header)

    received = [0]
    lock = threading.Lock()

    def on_message(mid: int, body: Any) -> None:
        if mid == _IMAGE:
            with lock:
                received[0] += 1

    bar = progress_bar(source.n_frames, progress)
    shown = [0]

    def on_sent(count: int) -> None:
        bar.update(1)
        if received[0] != shown[0]:
            shown[0] = received[0]
            bar.set_postfix_str(f"{shown[0]} maps", refresh=False)

    try:
        run_result = loopback.run_gadget(
            source.header, source.images(), properties, env=env, on_sent=on_sent, on_message=on_message,
            stall_timeout_s=loopback.STALL_TIMEOUT_S if stall_timeout_s is None else stall_timeout_s)
    finally:
        bar.close()
    out = write_outputs(run_result.images, out_path, header=source.header, settings=parsed,
                        out_group=out_group or source.group, png_dir=png_dir, nifti_dir=nifti_dir)
    return ReplayResult(source.path, Path(out_path), source.group, out.group, run_result.sent, len(run_result.images),
                        out.slices, out.series, time.perf_counter() - t0, run_result.seconds,
                        run_result.stream_seconds, out.png_files, out.nifti_files, run_result.stderr, source.n_b1)


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
        h5io, _ = _stream_modules()
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
        from .figures import require_matplotlib

        require_matplotlib()
    if nifti_dir is not None:
        _require_nibabel()
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
    h5io, _ = _stream_modules()
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
    h5io, _ = _stream_modules()
    dst = Path(out_path)
    slices = maps_by_slice(images, settings)
    series = h5io.write_images(dst, images, group=out_group, xml_header=header)
    pngs: list[Path] = []
    niftis: list[Path] = []
    if png_dir is not None and slices:
        from .figures import save_map_pngs

        pngs = save_map_pngs({s: {n: d for n, (d, _) in m.items() if n in MAP_NAMES} for s, m in slices.items()},
                             png_dir, prefix=dst.stem)
    if nifti_dir is not None and slices:
        niftis = save_nifti(slices, nifti_dir, prefix=dst.stem)
    return Outputs(out_group, len(slices), series, pngs, niftis)


# =========================================================================== command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``drone replay``'s arguments to ``parser``."""
    parser.add_argument("input", type=Path, metavar="IN.h5", help="ISMRMRD file with the MRF frames as images")
    parser.add_argument("output", type=Path, metavar="OUT.h5",
                        help="ISMRMRD file to write the maps to (/<group>/image_<series>; replaced)")
    parser.add_argument("--group", help="input group (default: the only group holding frames; groups of DRONE "
                                        "maps only, such as <group>_truth, are set aside)")
    parser.add_argument("--var", action="append", dest="variables", metavar="NAME",
                        help="image var of the group to send (repeatable; default: all)")
    parser.add_argument("--out-group", help="output group (default: the input group)")
    parser.add_argument("--model", help="DRONE model file (.safetensors) instead of the shipped one")
    parser.add_argument("--estimator", choices=("network", "dictionary"), help="network (DRONE) or dictionary matching")
    parser.add_argument("--b1", metavar="MODE",
                        help="the property b1: none, stream (the file's B1 map var, series b1_series_index, is sent "
                             "first), estimate or file:<path> (docs/GADGET.md, B1 maps)")
    parser.add_argument("--png", type=Path, metavar="DIR", help="write one PNG of the maps per slice into DIR")
    parser.add_argument("--nifti", type=Path, metavar="DIR",
                        help="write one NIfTI file per map into DIR (needs nibabel)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="properties",
                        help="a gadget property, as in the chain's <configuration> (repeatable), e.g. --set device=cpu "
                             "--set mask_threshold=0.1")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def parse_property_args(items: Sequence[str] | None, named: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Gadget properties from ``--set NAME=VALUE`` items and named options (``{"model": args.model}``).

    Raises:
        ValueError: an item without ``=``, a property given twice, or a named option that
            disagrees with ``--set``.
    """
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set: expected NAME=VALUE, got {item!r}")
        name = name.strip()
        if name in out:
            raise ValueError(f"--set: property {name!r} given twice")
        out[name] = value
    for option, given in (named or {}).items():
        if given is not None:
            if option in out and out[option] != given:
                raise ValueError(f"--{option} {given!r} and --set {option}={out[option]!r} disagree")
            out[option] = given
    return out


def _properties(args: argparse.Namespace) -> dict[str, str]:
    return parse_property_args(args.properties, {name: getattr(args, name, None)
                                                 for name in ("model", "estimator", "b1")})


def run(args: argparse.Namespace) -> int:
    """Run ``drone replay`` from parsed arguments; 0 on success, 1 when the gadget or its process failed.

    Argument and input errors raise ValueError/OSError (the CLI prints them); gadget failures are
    printed here with the gadget's message.
    """
    try:
        _, loopback = _stream_modules()
    except ImportError as exc:
        print(f"drone replay: {exc}", file=sys.stderr)
        return 2
    GadgetError, LoopbackError = loopback.GadgetError, loopback.LoopbackError
    try:
        result = replay(args.input, args.output, group=args.group, settings=_properties(args), png_dir=args.png,
                        nifti_dir=args.nifti, progress=not args.quiet, variables=args.variables,
                        out_group=args.out_group)
    except GadgetError as exc:
        print(f"drone replay: {exc.gadget_message}", file=sys.stderr)
        return 1
    except LoopbackError as exc:
        print(f"drone replay: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"drone replay: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drone_gadgets.replay IN.h5 OUT.h5 …`` (the same as ``drone replay``)."""
    parser = argparse.ArgumentParser(prog="drone replay", description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"drone replay: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
