"""The gadget's optional maps and its noise-aware mask, end to end through its stages.

A noisy brain phantom scan goes through :func:`drone_gadgets.recon.stages.pipeline` as ismrmrd images; the maps
that come back are compared with :func:`drone_core.reconstruct.reconstruct` run here on the same frames, and
their meta with the σ the frames were simulated with.
"""

from __future__ import annotations

import logging
import re

import ismrmrd
import numpy as np
import pytest

from drone_core.model import DroneModel, default_model
from drone_core.phantoms import brain_phantom, image_noise_sigma, simulate_frames
from drone_core.reconstruct import reconstruct
from drone_core.schedule import default_schedule
from drone_gadgets.recon.conversion import make_image
from drone_gadgets.recon.errors import SettingsError
from drone_gadgets.recon.settings import GadgetSettings, MAP_NAMES, parse_settings, settings_from_properties
from drone_gadgets.recon.settings import settings_to_properties
from drone_gadgets.recon.stages import pipeline
from gadgetron_peer import config_xml, frame_header, image_of

SCHEDULE = default_schedule()
LEVEL = 0.02
#: σ from a slice's ~11,000 air voxels is within ≈ 0.3 % (tests/test_masking.py); 1 % here.
SIGMA_RTOL = 0.01


@pytest.fixture(scope="module")
def model() -> DroneModel:
    return default_model(device="cpu")


@pytest.fixture(scope="module")
def scan() -> tuple[np.ndarray, float]:
    phantom = brain_phantom(2)
    clean = simulate_frames(phantom, SCHEDULE, 0.0, magnitude=False)
    return simulate_frames(phantom, SCHEDULE, LEVEL, seed=51), image_noise_sigma(clean, LEVEL)


def _images(frames: np.ndarray) -> list[ismrmrd.Image]:
    n, n_slices = frames.shape[:2]
    return [image_of(frames[i, s], frame_header(s, i, shape=frames.shape[2:]))
            for i in range(n) for s in range(n_slices)]


def _by_series(out: list) -> dict[tuple[int, int], ismrmrd.Image]:
    return {(int(im.getHead().slice), int(im.image_series_index)): im for im in out if isinstance(im, ismrmrd.Image)}


def test_settings_of_the_mask_and_the_optional_maps() -> None:
    defaults = GadgetSettings()
    assert defaults.mask_threshold is None and defaults.mask_snr == 2.0 and defaults.despeckle is None
    assert defaults.maps == ("t1", "t2", "m0")
    s = parse_settings(config_xml({"mask_threshold": "0.1", "mask_snr": "3", "mask_despeckle": "false",
                                   "maps": "fit, t2_sd,t1"}))
    assert (s.mask_threshold, s.mask_snr, s.despeckle, s.maps) == (0.1, 3.0, False, ("t1", "t2_sd", "fit"))
    assert s.series_index == {"t1": 100, "t2": 101, "m0": 102, "t1_sd": 105, "t2_sd": 106, "fit": 107}
    assert settings_from_properties(settings_to_properties(s)) == s
    assert settings_from_properties({"mask_threshold": "AUTO"}).mask_threshold is None
    for props, message in [({"mask_threshold": "noise"}, "expected 'auto' (the noise-aware mask) or a number"),
                           ({"mask_snr": "0"}, "property 'mask_snr': expected a positive number"),
                           ({"mask_despeckle": "maybe"}, "expected one of auto, true, false"),
                           ({"maps": "t1,t1_var"}, "unknown map"),
                           ({"maps": "t1,t1_sd", "t1_sd_series_index": "100"}, "'t1_sd_series_index': 100 is also")]:
        with pytest.raises(SettingsError, match=re.escape(message)):
            settings_from_properties(props)


def test_pipeline_emits_every_map_with_its_series_and_the_noise(model: DroneModel, scan, caplog) -> None:
    frames, sigma = scan
    settings = settings_from_properties({"device": "cpu", "maps": ",".join(MAP_NAMES)})
    with caplog.at_level(logging.INFO, logger="drone_gadgets.recon.stages"):
        out = _by_series(list(pipeline(_images(frames), model, settings)))
    assert sorted(out) == [(s, i) for s in (0, 1) for i in (100, 101, 102, 105, 106, 107)]
    for s in (0, 1):
        expected = reconstruct(frames[:, s][:, None], model, uncertainty=True, goodness_of_fit=True)
        for name, series in settings.series_index.items():
            image = out[(s, series)]
            np.testing.assert_array_equal(np.asarray(image.data)[0], getattr(expected, name), err_msg=name)
            meta = image.meta
            assert float(meta["DRONE_NoiseSigma"]) == pytest.approx(sigma, rel=SIGMA_RTOL)
            assert meta["DRONE_MaskRule"] == "noise"
        assert out[(s, 105)].meta["DRONE_Map"] == "T1SD" and out[(s, 105)].meta["Units"] == "ms"
        assert out[(s, 107)].meta["DRONE_Map"] == "FIT"
    logged = [r.getMessage() for r in caplog.records if "foreground voxels" in r.getMessage()]
    rule = "mask RMS ≥ 2 σ and norm ≥ 0.05 × p99"
    assert len(logged) == 2 and all("noise σ" in t and rule in t for t in logged), logged


def test_uncertainty_maps_need_a_model_with_a_table(model: DroneModel, scan) -> None:
    bare = DroneModel(model.network, model.schedule, model.t1_range_ms, model.t2_range_ms, b1=model.b1,
                      m0_table=model.m0_table)
    settings = settings_from_properties({"device": "cpu", "maps": "t1,t2_sd"})
    with pytest.raises(SettingsError, match=r"property 'maps': t2_sd need a DRONE network model with an uncertainty"):
        list(pipeline(_images(scan[0][:, :1]), bare, settings))
    fit_only = settings_from_properties({"device": "cpu", "maps": "t1,fit"})  # the fit map needs no table
    assert len(list(pipeline(_images(scan[0][:, :1]), bare, fit_only))) == 2


def test_noise_free_frames_fall_back_to_the_fraction_mask_with_a_warning(model: DroneModel, caplog) -> None:
    clean = simulate_frames(brain_phantom(1), SCHEDULE, 0.0)
    settings = settings_from_properties({"device": "cpu", "maps": "t1,t1_sd"})
    with caplog.at_level(logging.WARNING, logger="drone_gadgets.recon.stages"):
        out = _by_series(list(pipeline(_images(clean), model, settings)))
    assert out[(0, 100)].meta["DRONE_NoiseSigma"] == "unknown" and out[(0, 100)].meta["DRONE_MaskRule"] == "fraction"
    assert any("no noise-only background found" in r.getMessage() for r in caplog.records)
    # the sd maps use the tissue's own residual, here only the network's error: a tiny σ, a tiny sd
    t1 = np.asarray(out[(0, 100)].data)
    sd = np.asarray(out[(0, 105)].data)
    tissue = t1 > 0
    assert float(out[(0, 105)].meta["DRONE_NoiseSigmaTissue"]) > 0
    assert np.median(sd[tissue] / t1[tissue]) < 0.01


def test_b1_map_images_are_not_taken_for_frames(model: DroneModel, scan, caplog) -> None:
    """client.py sends every image var of a file: a simulate-scan file's B1 maps come after its frames."""
    frames = scan[0][:, :1]
    header = frame_header(0, 0, shape=frames.shape[2:])
    b1_image = make_image(np.full(frames.shape[2:], 100.0, np.float32), header, image_series_index=5, image_index=1,
                          meta={"DRONE_Map": "B1", "Units": "percent"})
    settings = settings_from_properties({"device": "cpu"})
    plain = _by_series(list(pipeline(_images(frames), model, settings)))
    with caplog.at_level(logging.WARNING, logger="drone_gadgets.recon.stages"):
        with_b1 = _by_series(list(pipeline(_images(frames) + [b1_image], model, settings)))
    assert sorted(with_b1) == sorted(plain)
    for key in plain:
        np.testing.assert_array_equal(np.asarray(with_b1[key].data), np.asarray(plain[key].data))
    assert any("B1 map image" in r.getMessage() and "not a frame" in r.getMessage() for r in caplog.records)


def test_the_estimator_is_warmed_up_for_the_optional_maps_too() -> None:
    """build_estimator with maps asking for the fit: the warm-up builds the 12-position slice-profile table the
    atoms of the fit and of the tissue's σ are simulated with, so the first slice does not pay it."""
    from drone_core.excitation import profile_table
    from drone_core.goodness_of_fit import N_POSITIONS
    from drone_gadgets.recon.estimators import build_estimator

    profile_table.cache_clear()
    plain = build_estimator(settings_from_properties({"device": "cpu"}))
    hits_plain = profile_table.cache_info().currsize
    profile_table.cache_clear()
    estimator = build_estimator(settings_from_properties({"device": "cpu", "maps": "t1,t2_sd,fit"}))
    assert estimator.uncertainty_table is not None and plain.uncertainty_table is not None
    assert profile_table.cache_info().currsize == hits_plain + 1  # the N_POSITIONS table, made at start-up
    profile_table(estimator.schedule.excitation, N_POSITIONS)
    assert profile_table.cache_info().hits >= 1
