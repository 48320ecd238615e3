"""drone_core.model: architecture, normalisation, the fast inference path, save/load integrity,
input checks, schedule checks and M0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drone_core.epg import simulate
from drone_core.m0 import fit_m0
from drone_core.model import (B1Use, DroneMLP, DroneModel, cpu_has_fast_bf16, normalise_fingerprints,
                              resolve_precision)
from drone_core.schedule import Schedule

#: Fast path (addmm + in-place tanh) vs nn.Sequential in fp32: same math, different kernels/order;
#: outputs in ms over a 5000 ms range → 1e-6 relative of the sigmoid is 5e-3 ms.
FAST_PATH_ATOL_MS = 5e-2
#: bf16 hidden layers (8-bit mantissa) on an untrained network: errors of ~0.5 % of the range.
BF16_ATOL_MS = 60.0
#: Scale invariance: normalisation divides out the scale exactly up to float32 rounding.
SCALE_ATOL_MS = 1e-2
#: M0 from noise-free atoms at the exact parameters: float32 dot products.
M0_RTOL = 1e-5

N_FRAMES = 11


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    rng = np.random.default_rng(4)
    return Schedule("model-test", rng.uniform(5, 90, N_FRAMES).tolist(), rng.uniform(45, 250, N_FRAMES).tolist(),
                    23.0, 19.0, 1.0)


@pytest.fixture()
def model(schedule: Schedule) -> DroneModel:
    torch.manual_seed(0)
    return DroneModel(DroneMLP(N_FRAMES, (40, 30)), schedule, (10.0, 5000.0), (2.0, 2000.0),
                      training={"note": "untrained, for tests"})


@pytest.fixture()
def signals(schedule: Schedule) -> np.ndarray:
    rng = np.random.default_rng(5)
    t1 = rng.uniform(200, 4000, 37)
    t2 = rng.uniform(20, 180, 37)
    return np.abs(simulate(schedule, t1, t2))


def test_paper_architecture() -> None:
    net = DroneMLP()
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(300, 25), (300,), (300, 300), (300,), (2, 300), (2,)]
    assert net.n_parameters() == 98_702
    assert isinstance(net.layers[1], torch.nn.Tanh) and isinstance(net.layers[-1], torch.nn.Sigmoid)


def test_configurable_architecture() -> None:
    net = DroneMLP(13, (64, 32, 16), "relu")
    assert net.architecture() == {"type": "mlp", "n_frames": 13, "hidden": [64, 32, 16], "activation": "relu",
                                  "n_outputs": 2, "output": "sigmoid"}
    assert DroneMLP.from_architecture(net.architecture()).n_parameters() == net.n_parameters()
    with pytest.raises(ValueError, match="activation"):
        DroneMLP(13, (8,), "swish!")
    with pytest.raises(ValueError, match="hidden"):
        DroneMLP(13, ())


def test_normalisation_is_l2_times_sqrt_n_and_flags_invalid() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, np.nan], [-3.0, 4.0]])
    out, valid = normalise_fingerprints(x)
    np.testing.assert_allclose(out[0].numpy(), np.array([0.6, 0.8]) * np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(out[3].numpy(), out[0].numpy())  # magnitudes
    assert valid.tolist() == [True, False, False, True]
    assert torch.all(out[1] == 0) and torch.all(out[2] == 0)


def test_fast_path_matches_module(model: DroneModel, signals: np.ndarray) -> None:
    t1, t2 = model.predict(signals, precision="fp32")
    with torch.no_grad():
        x, _ = normalise_fingerprints(signals, N_FRAMES)
        r1, r2 = model.unit_to_ms(model.network(x))
    np.testing.assert_allclose(t1, r1.numpy(), atol=FAST_PATH_ATOL_MS)
    np.testing.assert_allclose(t2, r2.numpy(), atol=FAST_PATH_ATOL_MS)
    b1, b2 = model.predict(signals, precision="bf16")
    np.testing.assert_allclose(b1, t1, atol=BF16_ATOL_MS)
    np.testing.assert_allclose(b2, t2, atol=BF16_ATOL_MS)


def test_auto_precision_follows_hardware() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    # bf16 pays on a CPU only for wide networks (CPU_BF16_MIN_WIDTH): a 96-wide one runs fp32
    assert resolve_precision("auto", cpu, 256) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("auto", cpu, 96) == "fp32" and resolve_precision("bf16", cpu, 96) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)


def test_predict_is_scale_invariant_and_takes_complex(model: DroneModel, schedule: Schedule) -> None:
    rng = np.random.default_rng(6)
    cplx = simulate(schedule, rng.uniform(300, 3000, 9), rng.uniform(30, 300, 9))
    a = model.predict(np.abs(cplx))
    b = model.predict(np.abs(cplx) * 1234.5)
    c = model.predict(cplx)
    d = model.predict(torch.from_numpy(cplx))
    for other in (b, c, d):
        np.testing.assert_allclose(other[0], a[0], atol=SCALE_ATOL_MS)
        np.testing.assert_allclose(other[1], a[1], atol=SCALE_ATOL_MS)
    assert a[0].dtype == np.float32


def test_predict_nan_for_zero_and_non_finite(model: DroneModel, signals: np.ndarray) -> None:
    bad = signals.copy()
    bad[2] = 0.0
    bad[5, 3] = np.inf
    t1, t2 = model.predict(bad)
    assert np.isnan(t1[[2, 5]]).all() and np.isnan(t2[[2, 5]]).all()
    assert np.isfinite(np.delete(t1, [2, 5])).all()


def test_predict_output_within_ranges(model: DroneModel, signals: np.ndarray) -> None:
    t1, t2 = model.predict(signals)
    assert np.all((t1 >= 10.0) & (t1 <= 5000.0)) and np.all((t2 >= 2.0) & (t2 <= 2000.0))


def test_wrong_frame_count_is_refused(model: DroneModel) -> None:
    with pytest.raises(ValueError, match=r"signals: expected 11 frames .* got 12"):
        model.predict(np.ones((4, 12)))
    with pytest.raises(ValueError, match=r"signals: expected shape \(n, n_frames\)"):
        model.predict(np.ones(11))
    with pytest.raises(ValueError, match="precision"):
        model.predict(np.ones((2, 11)), precision="fp8")  # type: ignore[arg-type]


def test_save_load_round_trip_identical(model: DroneModel, signals: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = DroneModel.load(path)
    for a, b in zip(model.predict(signals), loaded.predict(signals)):
        np.testing.assert_array_equal(a, b)
    assert loaded.schedule.digest() == model.schedule.digest()
    assert loaded.t1_range_ms == model.t1_range_ms and loaded.training == model.training
    assert loaded.network.architecture() == model.network.architecture()


def _header(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8:8 + n])


def test_tampered_weights_are_refused(model: DroneModel, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    model.save(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        DroneModel.load(path)


def test_tampered_schedule_is_refused(model: DroneModel, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    model.save(path)
    n, header = _header(path)
    meta = json.loads(header["__metadata__"]["drone_model"])
    meta["schedule"]["flip_angle_deg"][0] += 1.0
    header["__metadata__"]["drone_model"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    data = path.read_bytes()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    with pytest.raises(ValueError, match="schedule does not match"):
        DroneModel.load(path)


def test_the_file_records_the_slice_rotation_and_old_files_read_as_x(model: DroneModel, tmp_path: Path) -> None:
    """A model knows the slice-profile model its atoms came from: the normative spinor for new models; files
    written before the entry existed were trained on the rotation about x, and read so."""
    assert model.rotation == "spinor"
    path = tmp_path / "m.safetensors"
    model.save(path)
    n, header = _header(path)
    meta = json.loads(header["__metadata__"]["drone_model"])
    assert meta["signal_model"] == {"slice_rotation": "spinor"}
    assert DroneModel.load(path).rotation == "spinor"
    del meta["signal_model"]
    header["__metadata__"]["drone_model"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    data = path.read_bytes()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    assert DroneModel.load(path).rotation == "x"
    with pytest.raises(ValueError, match=r"rotation: expected one of \['x', 'spinor'\], got 'z'"):
        DroneModel(model.network, model.schedule, model.t1_range_ms, model.t2_range_ms, rotation="z")


def test_not_a_model_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match="not a safetensors model file"):
        DroneModel.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError, match="not a DRONE model file"):
        DroneModel.load(other)
    with pytest.raises(ValueError, match="cannot read"):
        DroneModel.load(tmp_path / "missing.safetensors")


def test_schedule_check_names_both(model: DroneModel, schedule: Schedule) -> None:
    model.check_schedule(schedule.replace(name="renamed"))  # same physics passes
    other = schedule.replace(te_ms=25.0, name="scanner-protocol")
    with pytest.raises(ValueError, match=r"'scanner-protocol'.*'model-test'"):
        model.check_schedule(other)


def test_network_and_schedule_frame_counts_must_agree(schedule: Schedule) -> None:
    with pytest.raises(ValueError, match="network: expects 12 frames"):
        DroneModel(DroneMLP(12), schedule, (1, 5000), (1, 2000))


def test_fit_m0_recovers_scale(schedule: Schedule) -> None:
    rng = np.random.default_rng(7)
    atoms = np.abs(simulate(schedule, rng.uniform(300, 3000, 20), rng.uniform(30, 300, 20)))
    scale = rng.uniform(0.1, 500.0, 20).astype(np.float32)
    np.testing.assert_allclose(fit_m0(atoms * scale[:, None], atoms), scale, rtol=M0_RTOL)
    t = fit_m0(torch.from_numpy(atoms * scale[:, None]), torch.from_numpy(atoms))
    np.testing.assert_allclose(t.numpy(), scale, rtol=M0_RTOL)
    assert fit_m0(np.ones((1, 3)), np.zeros((1, 3)))[0] == 0.0


def test_estimate_m0_is_scale_equivariant(model: DroneModel, signals: np.ndarray) -> None:
    a = model.estimate(signals)
    b = model.estimate(signals * 3.0)
    np.testing.assert_allclose(b.m0, 3.0 * a.m0, rtol=1e-4)
    np.testing.assert_array_equal(a.t1_ms, model.predict(signals)[0])


@pytest.mark.gpu
def test_predict_on_cuda_matches_cpu(model: DroneModel, signals: np.ndarray) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = model.predict(signals)
    gpu = model.to("cuda").predict(signals)
    np.testing.assert_allclose(gpu[0], cpu[0], atol=FAST_PATH_ATOL_MS)


def test_log_target_transform_round_trip(schedule: Schedule, tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = DroneModel(DroneMLP(N_FRAMES, (8,)), schedule, (10.0, 5000.0), (2.0, 2000.0), target_transform="log")
    t1 = torch.tensor([10.0, 100.0, 5000.0], dtype=torch.float64)
    t2 = torch.tensor([2.0, 63.245553203367585, 2000.0], dtype=torch.float64)  # √(2·2000): the log midpoint
    y = m.targets_to_unit(t1, t2)
    np.testing.assert_allclose(y[:, 1].numpy(), [0.0, 0.5, 1.0], atol=1e-9)
    back = m.unit_to_ms(y)
    np.testing.assert_allclose(back[0].numpy(), t1.numpy(), rtol=1e-12)
    m.save(tmp_path / "log.safetensors")
    loaded = DroneModel.load(tmp_path / "log.safetensors")
    assert loaded.target_transform == "log"
    x = np.abs(simulate(schedule, [900.0, 1500.0], [80.0, 120.0]))
    np.testing.assert_array_equal(loaded.predict(x)[0], m.predict(x)[0])
    with pytest.raises(ValueError, match="target_transform"):
        DroneModel(DroneMLP(N_FRAMES, (8,)), schedule, (10.0, 5000.0), (2.0, 2000.0), target_transform="sqrt")
    with pytest.raises(ValueError, match="low > 0"):
        DroneModel(DroneMLP(N_FRAMES, (8,)), schedule, (0.0, 5000.0), (2.0, 2000.0), target_transform="log")


# ---------------------------------------------------------------------- B1 as an input or an output
@pytest.fixture()
def b1_model(schedule: Schedule) -> DroneModel:
    from drone_core.model import B1Use

    torch.manual_seed(1)
    return DroneModel(DroneMLP(N_FRAMES, (40, 30), n_extra_inputs=1), schedule, (10.0, 5000.0), (2.0, 2000.0),
                      b1=B1Use(input=True, range=(0.5, 1.5)))


def test_b1_input_round_trip(b1_model: DroneModel, signals: np.ndarray, tmp_path: Path) -> None:
    n = signals.shape[0]
    b1 = np.linspace(0.6, 1.4, n)
    t1, t2 = b1_model.predict(signals, b1, precision="fp32")
    # The B1 feature reaches the network: the same signals at another B1 give other estimates.
    t1_one, _ = b1_model.predict(signals, np.ones(n), precision="fp32")
    assert np.max(np.abs(t1 - t1_one)) > 1.0
    # None means B1 = 1 exactly.
    np.testing.assert_array_equal(b1_model.predict(signals, precision="fp32")[0], t1_one)
    # The network sees [fingerprint, (b1 − 1)/0.5]: the plain module on that input agrees.
    x, _ = normalise_fingerprints(signals)
    feature = torch.as_tensor((b1 - 1.0) / 0.5, dtype=torch.float32)[:, None]
    y = b1_model.network(torch.cat([x, feature], dim=1)).detach()
    ref_t1, _ = b1_model.unit_to_ms(y)
    np.testing.assert_allclose(t1, ref_t1.numpy(), atol=FAST_PATH_ATOL_MS)
    # Save/load keeps the B1 use and the outputs.
    path = tmp_path / "b1.safetensors"
    b1_model.save(path)
    loaded = DroneModel.load(path)
    assert loaded.b1 == b1_model.b1
    assert json.loads(json.dumps(loaded.metadata()["b1"])) == {"input": True, "output": False, "range": [0.5, 1.5]}
    np.testing.assert_array_equal(loaded.predict(signals, b1, precision="fp32")[0], t1)


def test_b1_outside_range_gets_no_estimate(b1_model: DroneModel, signals: np.ndarray) -> None:
    n = signals.shape[0]
    b1 = np.ones(n)
    b1[[0, 3, 5]] = [0.3, 1.7, np.nan]
    t1, t2 = b1_model.predict(signals, b1)
    assert np.isnan(t1[[0, 3, 5]]).all() and np.isnan(t2[[0, 3, 5]]).all()
    assert np.isfinite(np.delete(t1, [0, 3, 5])).all()
    est = b1_model.estimate(signals, b1)
    assert (est.m0[[0, 3, 5]] == 0).all() and (np.delete(est.m0, [0, 3, 5]) > 0).all()
    with pytest.raises(ValueError, match=r"b1: expected None, a number or shape \(37,\)"):
        b1_model.predict(signals, np.ones(5))


def test_b1_refused_by_a_model_without_b1_input(model: DroneModel, signals: np.ndarray) -> None:
    with pytest.raises(ValueError, match="takes no B1 input"):
        model.predict(signals, np.ones(signals.shape[0]))
    with pytest.raises(ValueError, match="does not estimate B1"):
        model.predict_b1(signals)


def test_b1_use_must_fit_the_network(schedule: Schedule) -> None:
    from drone_core.model import B1Use

    with pytest.raises(ValueError, match="extra input"):
        DroneModel(DroneMLP(N_FRAMES, (8,)), schedule, (10.0, 5000.0), (2.0, 2000.0), b1=B1Use(input=True,
                                                                                              range=(0.5, 1.5)))
    with pytest.raises(ValueError, match="outputs"):
        DroneModel(DroneMLP(N_FRAMES, (8,)), schedule, (10.0, 5000.0), (2.0, 2000.0), b1=B1Use(output=True,
                                                                                              range=(0.5, 1.5)))
    with pytest.raises(ValueError, match="b1 range"):
        B1Use(input=True, range=(1.0, 1.0))


def test_b1_output_model(schedule: Schedule, signals: np.ndarray) -> None:
    from drone_core.model import B1Use

    torch.manual_seed(2)
    m = DroneModel(DroneMLP(N_FRAMES, (16,), n_outputs=3), schedule, (10.0, 5000.0), (2.0, 2000.0),
                   b1=B1Use(output=True, range=(0.5, 1.5)))
    t1, t2, b1 = m.predict_b1(signals, precision="fp32")
    assert b1.shape == (signals.shape[0],) and np.all((b1 >= 0.5) & (b1 <= 1.5))
    np.testing.assert_array_equal(m.predict(signals, precision="fp32")[0], t1)
    est, b1_again = m.estimate_b1(signals, precision="fp32")  # one forward pass for maps, M0 and B1
    np.testing.assert_array_equal(b1_again, b1)
    np.testing.assert_array_equal(est.m0, m.estimate(signals, precision="fp32").m0)
    targets = m.targets_to_unit(torch.tensor([100.0]), torch.tensor([50.0]), torch.tensor([1.25]))
    assert targets.shape == (1, 3) and targets[0, 2].item() == pytest.approx(0.75)
    assert m.metadata()["target"]["order"] == ["t1_ms", "t2_ms", "b1"]


def test_bf16_output_layer_is_fp32(b1_model: DroneModel, signals: np.ndarray) -> None:
    """The output layer runs in fp32 on the bf16 path: no ~0.7 % quantisation steps of the estimates."""
    b1 = np.full(signals.shape[0], 1.0)
    fp32 = b1_model.predict(signals, b1, precision="fp32")[0]
    bf16 = b1_model.predict(signals, b1, precision="bf16")[0]
    assert np.max(np.abs(bf16 - fp32)) <= BF16_ATOL_MS


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu"])
@pytest.mark.parametrize("hidden", [(16,), (24, 8), (32, 16, 12)])
def test_folded_bias_forward_equals_the_module(schedule: Schedule, activation: str, hidden: tuple[int, ...]) -> None:
    """The inference path folds every bias into its GEMM (an extra constant unit per layer): the outputs
    equal ``nn.Sequential``'s to float32 rounding (1e-6 of the [0, 1] outputs), for every activation and depth;
    bf16 hidden layers stay within 1e-2."""
    torch.manual_seed(3)
    net = DroneMLP(N_FRAMES, hidden, activation, n_extra_inputs=1)
    with torch.no_grad():  # biases far from 0, so that a dropped or doubled bias cannot pass
        for m in net.layers:
            if isinstance(m, torch.nn.Linear):
                m.bias.uniform_(-1.0, 1.0)
    mdl = DroneModel(net, schedule, (1.0, 5000.0), (1.0, 2000.0), b1=B1Use(True, False, (0.5, 1.5)))
    x = torch.cat([torch.rand(500, N_FRAMES) * 2, torch.rand(500, 1) * 2 - 1], dim=1)
    with torch.no_grad():
        ref = net(x)
    ones = torch.cat([x, torch.ones(500, 1)], dim=1)
    assert torch.allclose(mdl._forward_fast(ones, "fp32"), ref, atol=1e-6, rtol=0)
    assert torch.allclose(mdl._forward_fast(ones, "bf16"), ref, atol=1e-2, rtol=0)
    assert not torch.allclose(mdl._forward_fast(torch.cat([x, torch.zeros(500, 1)], dim=1), "fp32"), ref,
                              atol=1e-3, rtol=0)  # the constant column is what carries the biases


def test_keep_freed_memory_applies_on_glibc() -> None:
    import platform

    from drone_core.hardware import keep_freed_memory

    applied = keep_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
    assert keep_freed_memory() is applied  # once per process
