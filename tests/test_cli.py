"""The ``drone`` command line: every subcommand has --help; simulate writes a loadable dictionary;
crb prints the bounds; bad input gives a clear one-line error and exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drone_cli.main import build_parser, main
from drone_core.dictionary import Dictionary
from drone_core.epg import simulate
from drone_core.schedule import Schedule

SUBCOMMANDS = ("simulate", "crb", "design-schedule", "train", "simulate-scan", "replay", "compare", "demo")


@pytest.fixture()
def schedule_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    s = Schedule("cli-test", rng.uniform(5, 90, 9).tolist(), rng.uniform(45, 130, 9).tolist(), 23.0, 19.0, 1.0)
    path = tmp_path / "schedule.json"
    s.save(path)
    return path


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: drone " + command in capsys.readouterr().out


def test_simulate_log_grid_with_b1_and_fold(tmp_path: Path, schedule_file: Path) -> None:
    out = tmp_path / "d.safetensors"
    rc = main(["simulate", "--out", str(out), "--schedule", str(schedule_file), "--grid", "log",
               "--n-t1", "12", "--n-t2", "7", "--b1", "0.8", "1.2", "0.2", "--fold", "2", "--quiet"])
    assert rc == 0
    d = Dictionary.load(out)
    assert d.schedule.same_physics(Schedule.load(schedule_file))
    assert d.b1 is not None and set(np.round(d.b1, 6)) <= {0.8, 1.0, 1.2}
    assert np.all(d.t1_ms > d.t2_ms)
    expected = simulate(d.schedule, d.t1_ms, d.t2_ms, d.b1)
    np.testing.assert_array_equal(d.atoms, expected)


def test_crb_prints_table(schedule_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crb", "--schedule", str(schedule_file), "--sigma", "0.01"]) == 0
    out = capsys.readouterr().out
    for tissue in ("WM", "GM", "CSF"):
        assert tissue in out
    assert "cost" in out


def test_bad_schedule_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "flip_angle_deg": [10, 20], "tr_ms": [50], "te_ms": 23, "ti_ms": 19}')
    rc = main(["simulate", "--out", str(tmp_path / "o.safetensors"), "--schedule", str(bad), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "tr_ms" in err and "bad.json" in err


def test_parser_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`drone demo` (= make demo): brain scan → gadget over loopback → maps within a few % of the truth."""
    assert main(["demo", "--out", str(tmp_path), "--slices", "1", "--noise", "0.01"]) == 0
    out = capsys.readouterr().out
    for name in ("brain_scan.h5", "brain_maps.h5", "panel_slice0.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().split()[:1] in (["WM"], ["GM"])}
    for tissue, (t1, t2) in {"WM": (663, 83), "GM": (1110, 96)}.items():
        cols = rows[tissue]
        mean_t1, mean_t2 = float(cols[3]), float(cols[7])
        # 1 % noise: the tissue means are within 1 % (T1) and 2 % (T2) of the truth (demo prints ±sd, RMSE).
        assert abs(mean_t1 - t1) < 0.01 * t1 and abs(mean_t2 - t2) < 0.02 * t2, cols
