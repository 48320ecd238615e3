"""Tests of drone_core.schedule: JSON format, digest, validation, default schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from drone_core.schedule import DEFAULT_SCHEDULE_NAME, Schedule, default_schedule

#: Flip-angle change that must alter the digest: the digest keeps 4 decimals, so 0.01° is
#: 100 of its quanta — far above any rounding of the stored value.
DIGEST_SENSITIVE_FA_STEP_DEG = 0.01

#: The default schedule's design limits (DESIGN.md, "Figures"): 25 frames, TE 23, TI 19,
#: FA 5–90°, TR ≥ 45 ms, total ≤ 3.5 s.
DEFAULT_N_FRAMES = 25
DEFAULT_TE_MS = 23.0
DEFAULT_TI_MS = 19.0
DEFAULT_FA_RANGE_DEG = (5.0, 90.0)
DEFAULT_MIN_TR_MS = 45.0
DEFAULT_MAX_DURATION_MS = 3500.0


def _random_schedule(seed: int = 0, n_frames: int = 17, name: str = "random") -> Schedule:
    """A valid schedule with awkward (many-decimal) values, seeded."""
    rng = np.random.default_rng(seed)
    return Schedule(
        name,
        list(rng.uniform(5.0, 90.0, n_frames)),
        list(rng.uniform(45.0, 250.0, n_frames)),
        float(rng.uniform(5.0, 30.0)),
        float(rng.uniform(0.0, 50.0)),
        float(rng.uniform(0.8, 1.0)),
    )


def _valid_dict() -> dict:
    return {
        "name": "tiny",
        "flip_angle_deg": [10.0, 20.0, 30.0, 40.0],
        "tr_ms": [50.0, 60.0, 70.0, 80.0],
        "te_ms": 20.0,
        "ti_ms": 10.0,
        "inversion_efficiency": 0.95,
    }


def _with(**changes) -> dict:
    d = _valid_dict()
    d.update(changes)
    return d


# ---------------------------------------------------------------------------- round trip / digest
def test_json_round_trip_equal_and_same_digest(tmp_path: Path) -> None:
    sched = _random_schedule(1)
    path = tmp_path / "sched.json"
    sched.save(path)
    loaded = Schedule.load(path)
    assert loaded == sched
    assert loaded.digest() == sched.digest()
    assert loaded.to_dict() == sched.to_dict()
    # The file is the documented format: exactly these keys.
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert set(on_disk) == {"name", "flip_angle_deg", "tr_ms", "te_ms", "ti_ms", "inversion_efficiency"}


def test_string_round_trip() -> None:
    sched = _random_schedule(2)
    again = Schedule.from_json(sched.to_json())
    assert again == sched and again.digest() == sched.digest()


def test_basic_properties() -> None:
    sched = Schedule.from_dict(_valid_dict())
    assert sched.n_frames == 4
    assert sched.duration_ms == pytest.approx(10.0 + 50 + 60 + 70 + 80)
    fa, tr = sched.arrays()
    assert fa.dtype == np.float64 and tr.dtype == np.float64
    np.testing.assert_array_equal(fa, [10, 20, 30, 40])
    np.testing.assert_array_equal(tr, [50, 60, 70, 80])
    assert re.fullmatch(r"[0-9a-f]{16}", sched.digest())


def test_inversion_efficiency_defaults_to_one() -> None:
    d = _valid_dict()
    del d["inversion_efficiency"]
    assert Schedule.from_dict(d).inversion_efficiency == 1.0


def test_digest_ignores_name() -> None:
    sched = _random_schedule(3)
    renamed = sched.replace(name="something else entirely")
    assert renamed.name != sched.name
    assert renamed.digest() == sched.digest()
    assert renamed.same_physics(sched)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_digest_survives_float32_round_trip(seed: int) -> None:
    sched = _random_schedule(seed)
    f32 = Schedule(
        sched.name,
        np.asarray(sched.flip_angle_deg, dtype=np.float32),
        np.asarray(sched.tr_ms, dtype=np.float32),
        np.float32(sched.te_ms),
        np.float32(sched.ti_ms),
        np.float32(sched.inversion_efficiency),
    )
    assert f32.flip_angle_deg != sched.flip_angle_deg  # the values did change …
    assert f32.digest() == sched.digest()  # … but not the physics fingerprint


@pytest.mark.parametrize("index", [0, 7, 16])
def test_digest_changes_with_one_flip_angle(index: int) -> None:
    sched = _random_schedule(4)
    fa = list(sched.flip_angle_deg)
    fa[index] += DIGEST_SENSITIVE_FA_STEP_DEG
    changed = sched.replace(flip_angle_deg=fa)
    assert changed.digest() != sched.digest()
    assert not changed.same_physics(sched)


@pytest.mark.parametrize("field,value", [("te_ms", 21.0), ("ti_ms", 11.0), ("inversion_efficiency", 0.9),
                                         ("tr_ms", [50.0, 60.0, 70.0, 81.0])])
def test_digest_changes_with_other_physics(field: str, value) -> None:
    sched = Schedule.from_dict(_valid_dict())
    assert sched.replace(**{field: value}).digest() != sched.digest()


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "changes,field",
    [
        ({"tr_ms": [50.0, 60.0, 70.0]}, "'tr_ms'"),  # unequal lengths
        ({"flip_angle_deg": [10.0, 0.0, 30.0, 40.0]}, "'flip_angle_deg[1]'"),
        ({"flip_angle_deg": [10.0, 20.0, 30.0, 181.0]}, "'flip_angle_deg[3]'"),
        ({"flip_angle_deg": [-5.0, 20.0, 30.0, 40.0]}, "'flip_angle_deg[0]'"),
        ({"flip_angle_deg": [10.0, float("nan"), 30.0, 40.0]}, "'flip_angle_deg[1]'"),
        ({"flip_angle_deg": []}, "'flip_angle_deg'"),
        ({"tr_ms": [50.0, 20.0, 70.0, 80.0]}, "'tr_ms[1]'"),  # TR == TE
        ({"tr_ms": [50.0, 60.0, 19.0, 80.0]}, "'tr_ms[2]'"),  # TR < TE
        ({"tr_ms": [50.0, 60.0, 70.0, float("inf")]}, "'tr_ms[3]'"),
        ({"te_ms": 0.0}, "'te_ms'"),
        ({"te_ms": -3.0}, "'te_ms'"),
        ({"ti_ms": -0.5}, "'ti_ms'"),
        ({"inversion_efficiency": -0.01}, "'inversion_efficiency'"),
        ({"inversion_efficiency": 1.01}, "'inversion_efficiency'"),
    ],
)
def test_invalid_values_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        Schedule.from_dict(_with(**changes))


def test_boundary_values_are_valid() -> None:
    # α = 180 allowed, TI = 0 allowed, η = 0 and 1 allowed, TR just above TE allowed.
    Schedule.from_dict(_with(flip_angle_deg=[180.0, 1e-3, 30.0, 40.0], ti_ms=0.0, inversion_efficiency=0.0,
                             tr_ms=[20.001, 60.0, 70.0, 80.0]))
    Schedule.from_dict(_with(inversion_efficiency=1.0))


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"flip_angle_deg": ["10", 20.0, 30.0, 40.0]}, "'flip_angle_deg[0]'"),
        ({"flip_angle_deg": [[10.0, 20.0], [30.0, 40.0]]}, "'flip_angle_deg[0]'"),  # nested list
        ({"tr_ms": [50.0, None, 70.0, 80.0]}, "'tr_ms[1]'"),
        ({"tr_ms": "50, 60, 70, 80"}, "'tr_ms'"),
        ({"flip_angle_deg": None}, "'flip_angle_deg'"),
        ({"flip_angle_deg": 10.0}, "'flip_angle_deg'"),
        ({"te_ms": "20"}, "'te_ms'"),
        ({"ti_ms": None}, "'ti_ms'"),
        ({"inversion_efficiency": True}, "'inversion_efficiency'"),
        ({"flip_angle_deg": [True, False, True, False]}, "'flip_angle_deg[0]'"),
        ({"name": 7}, "'name'"),
    ],
)
def test_non_numbers_raise_type_error(changes: dict, field: str) -> None:
    with pytest.raises(TypeError, match=re.escape(field)):
        Schedule.from_dict(_with(**changes))


def test_bool_mixed_with_numbers_is_rejected() -> None:
    with pytest.raises(TypeError, match=re.escape("'flip_angle_deg[0]'")):
        Schedule.from_dict(_with(flip_angle_deg=[True, 20.0, 30.0, 40.0]))


def test_missing_field_is_named() -> None:
    d = _valid_dict()
    del d["te_ms"]
    with pytest.raises(ValueError, match=r"missing.*te_ms"):
        Schedule.from_dict(d)


def test_unknown_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown.*flip_angles"):
        Schedule.from_dict(_with(flip_angles=[1.0]))


def test_not_an_object() -> None:
    with pytest.raises(TypeError, match="JSON object"):
        Schedule.from_json("[1, 2, 3]")


def test_invalid_json_text() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        Schedule.from_json('{"name": "x", "flip_angle_deg": [10, 20,')


def test_replace_validates_again() -> None:
    sched = Schedule.from_dict(_valid_dict())
    with pytest.raises(ValueError, match=re.escape("'te_ms'")):
        sched.replace(te_ms=0.0)


# ---------------------------------------------------------------------------- load errors carry the path
def test_load_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.json"
    with pytest.raises(ValueError, match=re.escape(str(path))):
        Schedule.load(path)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        Schedule.load(tmp_path)


def test_load_invalid_json_names_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        Schedule.load(path)
    assert str(path) in str(info.value) and "JSON" in str(info.value)


def test_load_invalid_field_names_path_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad_fa.json"
    path.write_text(json.dumps(_with(flip_angle_deg=[10.0, 20.0, 200.0, 40.0])), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        Schedule.load(path)
    assert str(path) in str(info.value) and "'flip_angle_deg[2]'" in str(info.value)


def test_load_type_error_names_path(tmp_path: Path) -> None:
    path = tmp_path / "bad_te.json"
    path.write_text(json.dumps(_with(te_ms="twenty")), encoding="utf-8")
    with pytest.raises(TypeError) as info:
        Schedule.load(path)
    assert str(path) in str(info.value) and "'te_ms'" in str(info.value)


def test_load_missing_field_names_path(tmp_path: Path) -> None:
    d = _valid_dict()
    del d["tr_ms"]
    path = tmp_path / "no_tr.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        Schedule.load(path)
    assert str(path) in str(info.value) and "tr_ms" in str(info.value)


def test_load_non_utf8_names_path(tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(ValueError) as info:
        Schedule.load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------- default schedule
def test_default_schedule() -> None:
    sched = default_schedule()
    assert isinstance(sched, Schedule)
    assert sched.n_frames == DEFAULT_N_FRAMES
    assert sched.te_ms == DEFAULT_TE_MS
    assert sched.ti_ms == DEFAULT_TI_MS
    fa, tr = sched.arrays()
    assert np.all(fa >= DEFAULT_FA_RANGE_DEG[0]) and np.all(fa <= DEFAULT_FA_RANGE_DEG[1])
    assert np.all(tr >= DEFAULT_MIN_TR_MS)
    assert np.all(tr > sched.te_ms)
    assert sched.duration_ms <= DEFAULT_MAX_DURATION_MS


def test_default_schedule_file_round_trips(tmp_path: Path) -> None:
    sched = default_schedule()
    path = tmp_path / DEFAULT_SCHEDULE_NAME
    sched.save(path)
    assert Schedule.load(path) == sched
    assert Schedule.load(path).digest() == sched.digest()
