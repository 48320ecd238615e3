"""End to end with a simulator no one here wrote (issue 20, 3c): MRzeroCore → ISMRMRD → Gadgetron's GRAPPA EPI
chain → the DRONE gadget → maps, against the phantom's truth (tests marked ``gadgetron``).

MRzeroCore simulates the ``.seq`` of ``drone sequence`` (32 × 32, GRAPPA R = 2 with a separate 16-line ACS, the
hard inversion; :mod:`mrzero_scan`) on a disc phantom of WM, GM and CSF with 4 coils, noise-free, into k-space;
:func:`drone_gadgets.scans.convert.write_converted` turns the samples into a raw file through the same label →
flag path as ``drone convert``; the real Gadgetron (``xml_configs/drone_grappa_epi.xml``: EPI regridding and
ghost correction from the sequence's navigators, GRAPPA, filters, scaling) makes the 25 frames and the gadget
matches them against a dictionary of the ideal-slice model (``schedule.ideal()``: MRzero plays each RF pulse as
one rotation, so the slice is ideal), ``estimator=dictionary`` in a copy of the chain.

Tolerances (per-tissue means over the truth's tissue masks eroded by one pixel: the chain's Gaussian k-space
filter and the 32 × 32 Gibbs ringing blur the edges):

* WM and GM T1 and T2 within :data:`MEAN_TOLERANCE` (3 %), the issue's goal. Measured (200 graph states):
  WM T1 −0.7 %, T2 −0.9 %; GM T1 +0.1 %, T2 −0.8 % (1,000 states: WM −0.9 / −0.7 %, GM −0.1 / −0.4 %). The
  dictionary's log grid has 1 % steps (±0.5 % quantisation).
* CSF (T1 3799, T2 870 ms) only loosely (:data:`CSF_T1_TOLERANCE`, :data:`CSF_T2_TOLERANCE`): measured T1 +5.2 %,
  T2 −17.5 % at 200 states; T1 +2.3 %, T2 −10.4 % at 1,000 states (155 s instead of 33 s). MRzero's state pruning
  drops long-T2 echo pathways (``tests/test_mrzero.py``: CSF's frames are 6–8 % off the EPG from frame 10 on,
  and do not converge with more states), and CSF's T2 is the least determined parameter of the schedule.
* M0 in Gadgetron's scale: map/truth the same in WM and GM within :data:`MEAN_TOLERANCE` (measured 0.5 %).

Runtime: ≈ 35 s of MRzero on one core (200 states), a few seconds of Gadgetron.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

mr0 = pytest.importorskip("MRzeroCore", reason="MRzeroCore is not installed (the 'test' extra)")
pytest.importorskip("pypulseq", reason="pypulseq is not installed (the 'scanner' extra)")
pytest.importorskip("ismrmrd", reason="ismrmrd is not installed")

from gadgetron_server import REPO, GadgetronServer  # noqa: E402
from mrzero_scan import TISSUE_LABELS, MrzeroPhantom, adjoint_image, disc_phantom  # noqa: E402
from mrzero_scan import write_mrzero_scan, write_mrzero_sequence  # noqa: E402

pytestmark = pytest.mark.gadgetron

#: WM/GM mean T1, T2 (and the M0 ratio's spread) against the truth: the issue's goal.
MEAN_TOLERANCE = 0.03
#: CSF, loosely (module docstring: MRzero's pruned long-T2 pathways): measured +5.2 % (T1), −17.5 % (T2).
CSF_T1_TOLERANCE = 0.10
CSF_T2_TOLERANCE = 0.25
#: The phase graph's states (MRzero's ``max_state_count``): 200 keeps the simulation near half a minute.
MAX_STATES = 200
#: The ACS's plain adjoint image: object over air (measured 47); the centre line's peak over its median (66).
#: A simulation without readout encoding (every sample alike) gives ≈ 1 for both.
MIN_ENCODING_RATIO = 10.0
CHAIN = REPO / "xml_configs" / "drone_grappa_epi.xml"


def _eroded(labels: np.ndarray, label: int) -> np.ndarray:
    """``(z, y, x)`` boolean: each slice's ``labels == label`` eroded by one pixel."""
    from scipy import ndimage

    return np.stack([ndimage.binary_erosion(plane == label) for plane in labels])


def _read_maps(path: Path, group: str = "dataset") -> dict[int, np.ndarray]:
    """``{series: (slices, ny, nx)}`` of the T1, T2, M0 map images (series 100, 101, 102) in an ISMRMRD file."""
    import h5py

    with h5py.File(path, "r") as f:
        return {s: f[f"{group}/image_{s}/data"][:].reshape(-1, *f[f"{group}/image_{s}/data"].shape[-2:])
                for s in (100, 101, 102) if f"{group}/image_{s}" in f}


def _dictionary_chain(path: Path, dictionary: Path) -> Path:
    """A copy of :data:`CHAIN` whose gadget matches against ``dictionary`` on the CPU."""
    text = CHAIN.read_text(encoding="utf-8")
    for name, value in (("estimator", "dictionary"), ("dictionary", str(dictionary)), ("device", "cpu")):
        text, n = re.subn(rf'<property name="{name}" value="[^"]*"/>', f'<property name="{name}" value="{value}"/>',
                          text)
        assert n == 1, f"{CHAIN.name}: expected one property {name!r}, found {n}"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scan(gadgetron_server: GadgetronServer,
         tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, MrzeroPhantom, np.ndarray]:
    """``(seq, raw, phantom, signal)``: the sequence, MRzero's scan of it as ISMRMRD, the phantom, and the
    ``(samples, coils)`` signal. Asks for the server first: the simulation is only worth its half-minute with a
    Gadgetron to send it to."""
    folder = tmp_path_factory.mktemp("mrzero_chain")
    seq, raw = folder / "mrf.seq", folder / "raw.h5"
    phantom = disc_phantom((32, 32), n_coils=4)
    write_mrzero_sequence(seq, phantom.matrix, fov_mm=phantom.fov_mm, slice_thickness_mm=phantom.slice_thickness_mm)
    info, signal = write_mrzero_scan(raw, seq, phantom, max_states=MAX_STATES)
    assert (info.n_reference, info.n_noise, info.matrix, info.n_coils) == (16, 0, (32, 32), 4)
    return seq, raw, phantom, signal


def test_mrzero_encodes_the_image(scan) -> None:
    """MRzero's k-space is an image's (not flat readouts): the ACS's plain adjoint DFT shows the object above the
    air, and the centre line's readout peaks at its echo."""
    from scipy import ndimage

    from drone_gadgets.scans.convert import pulseq_readouts

    seq, _, phantom, signal = scan
    readouts, _ = pulseq_readouts(seq)
    acs = [k for k, r in enumerate(readouts) if r.reference and not r.navigator]
    image = adjoint_image(seq, signal, acs, phantom.matrix, phantom.fov_mm)
    inside = ndimage.binary_erosion(phantom.labels > 0, iterations=2)
    air = ~ndimage.binary_dilation(phantom.labels > 0, iterations=3)
    assert image[inside].mean() > MIN_ENCODING_RATIO * image[air].mean()
    starts = np.cumsum([0] + [r.n_samples for r in readouts])
    centre = next(k for k, r in enumerate(readouts)
                  if r.line == phantom.matrix[0] // 2 and r.frame == 0 and not (r.navigator or r.reference))
    samples = np.abs(signal[starts[centre]:starts[centre + 1]]).sum(axis=1)
    assert samples.max() > MIN_ENCODING_RATIO * np.median(samples)


def test_mrzero_scan_through_the_grappa_epi_chain_is_within_3_percent(gadgetron_server: GadgetronServer,
                                                                       scan, tmp_path: Path) -> None:
    from cli.main import main as drone
    from drone_core.dictionary import Dictionary, grid
    from drone_core.schedule import default_schedule

    _, raw, phantom, _ = scan
    t1, t2, _ = grid((100.0, 5000.0), (10.0, 2000.0), n_t1=400, n_t2=530, spacing="log")  # 1 % steps
    Dictionary.generate(default_schedule().ideal(), t1, t2).save(tmp_path / "ideal.safetensors")
    chain = _dictionary_chain(tmp_path / "drone_grappa_epi_ideal.xml", tmp_path / "ideal.safetensors")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = drone(["send", str(raw), str(tmp_path / "maps.h5"), "--port", str(gadgetron_server.port),
                    "--config-file", str(chain), "--quiet"])
    assert rc == 0, f"{err.getvalue()}\nserver log:\n{gadgetron_server.log_tail()}"
    maps, truth = _read_maps(tmp_path / "maps.h5"), phantom.truth()
    assert sorted(maps) == [100, 101, 102] and maps[100].shape == truth["t1"].shape == (1, 32, 32)
    errors, m0_ratio = {}, {}
    for name, label in TISSUE_LABELS.items():
        mask = _eroded(truth["labels"], label)
        assert mask.sum() > 30, name
        for series, key in ((100, "t1"), (101, "t2")):
            errors[name, key] = float(maps[series][mask].mean()) / float(truth[key][mask].mean()) - 1
        m0_ratio[name] = float((maps[102][mask] / truth["m0"][mask]).mean())
    report = ", ".join(f"{name} {key} {100 * e:+.2f} %" for (name, key), e in errors.items())
    print(f"MRzero → Gadgetron maps vs truth: {report}; M0/truth {m0_ratio}")  # shown with -s or -rP
    for name in ("WM", "GM"):
        for key in ("t1", "t2"):
            assert abs(errors[name, key]) < MEAN_TOLERANCE, report
    assert abs(errors["CSF", "t1"]) < CSF_T1_TOLERANCE, report
    assert abs(errors["CSF", "t2"]) < CSF_T2_TOLERANCE, report
    assert m0_ratio["GM"] / m0_ratio["WM"] - 1 == pytest.approx(0.0, abs=MEAN_TOLERANCE), m0_ratio
