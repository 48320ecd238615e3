"""Write ``docs/RESULTS.md`` from the experiments' JSON files, so the page shows exactly what was measured.

    python -m drone_training.experiments.report docs/results docs/RESULTS.md

Every number on the page comes from ``<folder>/<name>.json`` (written by ``drone experiments NAME
--out <folder>``); an experiment without its JSON is listed as not run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["render", "main"]


def _f(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _load(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if "experiment" in record:
            out[record["experiment"]] = record
    return out


def _figures(record: dict[str, Any], rel: str) -> list[str]:
    return [f"![{name}]({rel}/{name})" for name in record["figures"]]


def _time(record: dict[str, Any]) -> str:
    s = record["seconds"]
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# --------------------------------------------------------------------------- per experiment
def _training(r: dict[str, Any]) -> tuple[str, list[str]]:
    n = r["numbers"]
    t1, t2 = n["t1_ms"], n["t2_ms"]
    ours = (f"RMSE {_f(t1['rmse'])} / {_f(t2['rmse'])} ms, bias {_f(t1['bias'])} / {_f(t2['bias'])} ms, "
            f"R² {t1['r2']:.5f} / {t2['r2']:.5f}")
    lines = [f"Trained on {n['training_atoms']:,} atoms for {n['epochs']} epochs ({_f(n['train_seconds'], 0)} s of "
             f"training); cost from {n['train_loss'][0]:.3g} (epoch 1) to {n['train_loss'][-1]:.3g} (training) and "
             f"{n['val_loss'][-1]:.3g} (validation). Evaluated on all {n['evaluated_atoms']:,} noise-free atoms: "
             f"{ours} (T1 / T2)."]
    return ours, lines


def _brain(r: dict[str, Any]) -> tuple[str, list[str]]:
    rows = r["numbers"]["rows"]
    clean = rows[0]
    ours = (f"noise-free: network {_f(clean['network']['t1_rmse'])} / {_f(clean['network']['t2_rmse'])} ms, "
            f"matching {_f(clean['matching']['t1_rmse'])} / {_f(clean['matching']['t2_rmse'])} ms")
    lines = ["| noise level | peak SNR | network T1 / T2 RMSE (ms) | matching T1 / T2 RMSE (ms) |", "|---|---|---|---|"]
    for row in rows:
        snr = "∞" if row["peak_snr"] is None else f"{row['peak_snr']:.0f}"
        lines.append(f"| {row['noise_level']:.2%} | {snr} | {_f(row['network']['t1_rmse'])} / "
                     f"{_f(row['network']['t2_rmse'])} | {_f(row['matching']['t1_rmse'])} / "
                     f"{_f(row['matching']['t2_rmse'])} |")
    tissues = ", ".join(f"{k} {v[0]:g}/{v[1]:g} ms" for k, v in r["numbers"]["tissues"].items())
    lines.append("")
    lines.append(f"{r['numbers']['brain_voxels']:,} brain voxels; tissues {tissues}.")
    return ours, lines


def _density(r: dict[str, Any]) -> tuple[str, list[str]]:
    n = r["numbers"]
    fit = n["nn_linear_fit"]
    ratios_t1 = [e["dm_t1_rmse"]["mean"] / e["nn_t1_rmse"]["mean"] for e in n["per_factor"]]
    ratios_t2 = [e["dm_t2_rmse"]["mean"] / e["nn_t2_rmse"]["mean"] for e in n["per_factor"]]
    ours = (f"matching / network RMSE {min(ratios_t1):.1f}–{max(ratios_t1):.1f}× (T1), {min(ratios_t2):.1f}–"
            f"{max(ratios_t2):.1f}× (T2); linear fit of the network's RMSE R² {fit['t1']['r2']:.2f} / "
            f"{fit['t2']['r2']:.2f}")
    lines = [f"{n['dictionary_atoms']:,}-atom dictionary, {n['repetitions']} repetitions per factor, "
             f"{n['steps']:,} optimiser steps per network ({'-'.join(map(str, n['network']))} hidden), "
             f"test noise {n['test_noise']:.1%}. RMSE in ms, mean ± sd over the repetitions:", "",
             "| factor | training atoms | network T1 | matching T1 | network T2 | matching T2 |",
             "|---|---|---|---|---|---|"]
    for e in n["per_factor"]:
        cells = [f"{e[k]['mean']:.1f} ± {e[k]['sd']:.1f}" for k in ("nn_t1_rmse", "dm_t1_rmse", "nn_t2_rmse",
                                                                     "dm_t2_rmse")]
        lines.append(f"| {e['factor']} | {e['n_train']:,} | " + " | ".join(cells) + " |")
    lines += ["", f"Linear fit of the network's mean RMSE against the factor: T1 slope {fit['t1']['slope']:.2f} ms "
                  f"per factor, R² {fit['t1']['r2']:.2f}; T2 slope {fit['t2']['slope']:.2f}, R² {fit['t2']['r2']:.2f}. "
                  f"The network beats matching at every factor: "
                  f"{'yes' if n['nn_beats_matching_at_every_factor'] else 'no'}."]
    return ours, lines


def _nist(r: dict[str, Any]) -> tuple[str, list[str]]:
    n = r["numbers"]
    s = n["stats"]
    kept = s["T1 array"]["t2_ge_30"]
    ours = (f"T1 array, T2 ≥ 30 ms: R² {kept['t1']['r2']:.4f} / {kept['t2']['r2']:.4f}, T1 bias "
            f"{_f(kept['t1']['bias'])} ms, RMSE {_f(kept['t1']['rmse'])} / {_f(kept['t2']['rmse'])} ms; "
            f"30–1200 ms: T2 bias {_f(s['T1 array']['t2_30_to_1200']['t2']['bias'])}, RMSE "
            f"{_f(s['T1 array']['t2_30_to_1200']['t2']['rmse'])} ms")
    runs = ", ".join(f"{k} array: simulate-scan {v['simulate_scan']:.1f} s, replay {v['replay']:.1f} s"
                     for k, v in n["command_seconds"].items())
    lines = [f"Matrix {n['matrix'][0]}×{n['matrix'][1]}, noise {n['noise_level']:.1%}; `drone simulate-scan` then "
             f"`drone replay` through the gadget process ({runs}).", "",
             "| spheres | n | T1 R² | T1 bias | T1 RMSE | T2 R² | T2 bias | T2 RMSE |",
             "|---|---|---|---|---|---|---|---|"]
    names = {"all": "all", "t2_ge_30": "T2 ≥ 30 ms", "t2_30_to_1200": "30 ≤ T2 ≤ 1200 ms"}
    for group, subsets in s.items():
        for key, st in subsets.items():
            lines.append(f"| {group}, {names[key]} | {st['spheres']} | {st['t1']['r2']:.4f} | {_f(st['t1']['bias'])} | "
                         f"{_f(st['t1']['rmse'])} | {st['t2']['r2']:.4f} | {_f(st['t2']['bias'])} | "
                         f"{_f(st['t2']['rmse'])} |")
    lines += ["", "Per sphere (mean ± sd over the sphere's voxels; error of the mean in %):", "",
              "| array | sphere | T1 ref | T1 estimated | T1 error | T2 ref | T2 estimated | T2 error |",
              "|---|---|---|---|---|---|---|---|"]
    for sp in n["spheres"]:
        e1 = 100 * (sp["t1_mean"] / sp["t1_ref"] - 1)
        e2 = 100 * (sp["t2_mean"] / sp["t2_ref"] - 1)
        flag = " (excluded: T2 < 30)" if sp["t2_ref"] < 30 else ""
        lines.append(f"| {sp['array']} | {sp['sphere']}{flag} | {sp['t1_ref']:g} | {sp['t1_mean']:.1f} ± "
                     f"{sp['t1_sd']:.1f} | {e1:+.1f} % | {sp['t2_ref']:g} | {sp['t2_mean']:.1f} ± {sp['t2_sd']:.1f} | "
                     f"{e2:+.1f} % |")
    return ours, lines


def _table1(r: dict[str, Any]) -> tuple[str, list[str]]:
    t = r["numbers"]["tissues"]

    def cell(d: dict[str, Any], p: str) -> str:
        return f"{d[p]['mean']:.0f} ± {d[p]['sd']:.0f}" if p == "t1" else f"{d[p]['mean']:.1f} ± {d[p]['sd']:.1f}"

    ours = "; ".join(f"{k} {cell(v['network'], 't1')} / {cell(v['network'], 't2')}" for k, v in t.items())
    lines = [f"{r['numbers']['slices']} slices of {r['numbers']['matrix'][0]}×{r['numbers']['matrix'][1]}, noise "
             f"{r['numbers']['noise_level']:.0%}; ROI mean ± sd in ms:", "",
             "| tissue | voxels | paper in vivo T1 / T2 | phantom truth T1 / T2 | network T1 / T2 | matching T1 / T2 |",
             "|---|---|---|---|---|---|"]
    for name, v in t.items():
        p = v["paper"]
        lines.append(f"| {name} | {v['voxels']:,} | {p['t1_mean']:g} ± {p['t1_sd']:g} / {p['t2_mean']:g} ± "
                     f"{p['t2_sd']:g} | {cell(v['truth'], 't1')} / {cell(v['truth'], 't2')} | "
                     f"{cell(v['network'], 't1')} / {cell(v['network'], 't2')} | {cell(v['matching'], 't1')} / "
                     f"{cell(v['matching'], 't2')} |")
    return ours, lines


def _timing(r: dict[str, Any]) -> tuple[str, list[str]]:
    n = r["numbers"]
    cpu = n["ms_per_slice"]["cpu"]
    k = n["svd_rank"]
    ours = (f"CPU: network {_f(cpu['network'])} ms, matching {_f(cpu['matching'], 0)} ms "
            f"({cpu['speed_up_vs_matching']:.0f}×), SVD-{k} matching {_f(cpu[f'matching_svd{k}'], 0)} ms")
    lines = ["| device | network (ms) | matching (ms) | SVD-compressed matching (ms) | speed-up vs matching |",
             "|---|---|---|---|---|"]
    for device, row in n["ms_per_slice"].items():
        lines.append(f"| {device} | {_f(row['network'])} | {_f(row['matching'], 0)} | {_f(row[f'matching_svd{k}'], 0)} "
                     f"| {row['speed_up_vs_matching']:.0f}× |")
    lines += ["", f"{n['threads']} CPU threads; a 128 × 128 × 25 slice through `reconstruct` (mask, estimate, M0)."]
    return ours, lines


def _crb(r: dict[str, Any]) -> tuple[str, list[str]]:
    rows = r["numbers"]["rows"]
    ratios = [row[est][p]["sd"] / row["sqrt_crb"][p] for row in rows for est in ("network",) for p in ("t1", "t2")]
    ours = f"network sd / √CRB {min(ratios):.2f}–{max(ratios):.2f} over WM, GM, CSF and all SNRs"
    lines = [f"{r['numbers']['draws_per_tissue']} draws per tissue and level; sd and RMSE in ms:", "",
             "| tissue | peak SNR | √CRB T1 | network sd / RMSE T1 | matching sd / RMSE T1 | √CRB T2 | "
             "network sd / RMSE T2 | matching sd / RMSE T2 |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = []
        for p in ("t1", "t2"):
            cells.append(f"{row['sqrt_crb'][p]:.1f}")
            for est in ("network", "matching"):
                cells.append(f"{row[est][p]['sd']:.1f} / {row[est][p]['rmse']:.1f}")
        lines.append(f"| {row['tissue']} | {row['peak_snr']:.0f} | " + " | ".join(cells) + " |")
    return ours, lines


def _physics(r: dict[str, Any]) -> tuple[str, list[str]]:
    n = r["numbers"]
    worst, goals = n["worst_pct"], n["goals_pct"]
    pg = n["paper_grid"]
    ours = (f"worst \\|error\\| over WM/GM/CSF at B1 0.7–1.3: uncorrected {worst['uncorrected']['t1_pct']:.0f} % / "
            f"{worst['uncorrected']['t2_pct']:.0f} %, network + B1 map {worst['network_b1_given']['t1_pct']:.1f} % / "
            f"{worst['network_b1_given']['t2_pct']:.1f} % "
            f"(goal {goals['tissue_t1_pct']:g} / {goals['tissue_t2_pct']:g}); "
            f"NIST worst {n['nist_worst_pct']:.1f} % (goal {goals['nist_pct']:g})")
    est_names = (("uncorrected", "ideal slice, B1 = 1 assumed"), ("profile_b1_ignored", "network, no B1 map"),
                 ("network_b1_given", "network + B1 map"), ("matching_b1_given", "matching + B1 map"))
    lines = ["Errors in % of the truth, noise-free (T1 / T2):", "",
             "| tissue | B1 | " + " | ".join(label for _, label in est_names) + " |",
             "|---|---|" + "---|" * len(est_names)]
    for name, row in n["tissues"].items():
        for i, b1 in enumerate(row["b1"]):
            cells = [f"{row[key]['t1_pct'][i]:+.1f} / {row[key]['t2_pct'][i]:+.1f}" for key, _ in est_names]
            lines.append(f"| {name} | {b1:.1f} | " + " | ".join(cells) + " |")
    worst_text = "; ".join(f"{label} {worst[key]['t1_pct']:.2f} / {worst[key]['t2_pct']:.2f}"
                           for key, label in est_names)
    lines += ["", "Worst |error| over the three tissues and all B1 (T1 / T2, %): " + worst_text,
              "", "ISMRM/NIST spheres with T2 ≥ 30 ms, noise-free, B1 = 1, the shipped network (% error T1 / T2):", "",
              "| array | sphere | T1 (ms) | T2 (ms) | T1 error | T2 error |", "|---|---|---|---|---|---|"]
    for sphere in n["nist"]:
        lines.append(f"| {sphere['array']} | {sphere['sphere']} | {sphere['t1_ms']:g} | {sphere['t2_ms']:g} | "
                     f"{sphere['t1_pct']:+.1f} % | {sphere['t2_pct']:+.1f} % |")
    lines += ["", "The paper grid at B1 = 1 (RMSE in ms, T1 / T2):", "",
              "| | noise-free | 0.5 % noise | √CRB at 0.5 %, this slice profile | √CRB at 0.5 %, ideal slice |",
              "|---|---|---|---|---|",
              f"| shipped network | {pg['noise_free']['t1_ms']['rmse']:.1f} / "
              f"{pg['noise_free']['t2_ms']['rmse']:.1f} | "
              f"{pg['noise_0.5%']['t1_ms']['rmse']:.1f} / {pg['noise_0.5%']['t2_ms']['rmse']:.1f} | "
              f"{pg['crb_0.5%_profile']['t1_ms']:.1f} / {pg['crb_0.5%_profile']['t2_ms']:.1f} | "
              f"{pg['crb_0.5%_ideal']['t1_ms']:.1f} / {pg['crb_0.5%_ideal']['t2_ms']:.1f} |"]
    return ours, lines


_SECTIONS: dict[str, tuple[str, str, Callable[[dict[str, Any]], tuple[str, list[str]]]]] = {
    "training": ("Figs. 2–3: training curve and training-set reconstruction",
                 "RMSE 9.3 / 8.8 ms, bias 10 / 2.2 ms, R² 0.99 / 0.99", _training),
    "brain": ("Fig. 4: numerical brain phantom", "noise-free RMSE 3.5 / 7.8 ms (network)", _brain),
    "density": ("Fig. 5: training-dictionary density", "network 5–7× (T1) and 2× (T2) below matching at every "
                "factor; linear fit R² 0.94 / 0.89", _density),
    "nist": ("Fig. 6: ISMRM/NIST phantom", "R² 0.99, T1 bias 5.5 ms, RMSE 72 / 88 ms; T2 bias 21, RMSE 31 ms "
             "without the 4 shortest/longest T2", _nist),
    "table1": ("Table 1: ROI values", "in vivo WM 663 ± 30 / 83 ± 7.9, GM 1110 ± 59 / 96 ± 13, CSF 3799 ± 422 / "
               "870 ± 191 ms", _table1),
    "timing": ("Reconstruction time", "network ~10 ms, matching ~3 s (~300×) per 128×128 slice", _timing),
    "crb": ("Beyond the paper: distance to the Cramér–Rao bound", "—", _crb),
    "physics": ("Beyond the paper: slice profile and B1", "— (ideal slice, B1 = 1 throughout the paper)", _physics),
}


#: How to read each section (kept free of measured numbers, which come from the JSON files).
_READING: dict[str, str] = {
    "training": "The recipe is the first shipped model's (B1 = 1, the paper grid, 25-300-300-2), run here on the "
                "default schedule with its slice profile; the shipped model itself adds the B1 input, B1 draws, "
                "short-T atoms and a relative weighting (docs/MODEL.md), which is why its noise-free RMSE is lower. "
                "The cost is the MSE of the "
                "normalised (T1, T2) targets on fresh noise each epoch; the validation cost uses one fixed noisy "
                "draw.",
    "brain": "Noise-free, matching is nearly exact wherever a tissue's values fall on the dictionary's grid, while the "
             "network shows its approximation error. With noise, both are limited by the noise and stay close to "
             "each other (see the Cramér–Rao section): the network's advantage is speed and memory, not accuracy at "
             "the grid points. The paper's phantom was BrainWeb's; ours is an MNI152-derived label map with "
             "BrainWeb's 1.5 T values (drone_core/phantom_data/README.md).",
    "density": "This run predates the slice profile (it used the ideal-slice schedule and B1 = 1; its 60 trainings "
               "take 33 min and were not repeated): it is about dictionary density, which the pulse does not change. "
               "Both estimators are tested on the full dictionary with 0.5 % noise; matching searches the same sparse "
               "atoms the network was trained on. Each repetition draws its own uniform random subset (stride "
               "sub-sampling of the T1-major grid aliased with its rows at factor 40 and tripled both estimators' T1 "
               "error there; training/experiments/density.py). Every network gets the same number of optimiser "
               "steps, so sparse dictionaries are not also under-trained. At factors 2 and 5 matching is still "
               "dense enough to sit near the Cramér–Rao bound (an efficient unbiased estimator's RMSE over this grid "
               "at 0.5 % is 22.0 / 15.2 ms, docs/MODEL.md) and beats a network trained for this budget, whose error "
               "is its approximation floor (with 23,400 steps it reached 23.6 / 15.7 ms at factor 2, docs/MODEL.md). "
               "From factor 10 on the network wins, and its error does not grow with the factor at all up to 60: "
               "there is no slope for a line to explain, so the fit's R² is low — the paper's linear growth is not "
               "seen here, its robustness to sparse dictionaries is, more strongly.",
    "nist": "R² over sphere means is dominated by the range of values (20–2700 ms) and hides sphere-level errors: "
            "look at the per-sphere errors. The network's largest errors are at spheres with short T1 and T2 "
            "together (T1 array 10–12), where the paper grid has few training atoms and the MSE on linear targets "
            "weighs them little (docs/MODEL.md: a log-target model fixes most of it at a cost elsewhere). The "
            "excluded spheres (T2 < 30 ms, of the order of the 23 ms echo time) are out of reach of this schedule, "
            "as in the paper.",
    "table1": "The phantom's tissues have the paper's in vivo means with its ROI sd as a per-voxel spread, so the "
              "truth column is what a perfect estimator would report; both estimators reproduce the means and add "
              "the noise's variance to the spread. The paper's column is in vivo (its Fig. 7 ROIs), for reference.",
    "timing": "This run was measured on a heavily loaded machine, and the network's time includes the M0 fit, which "
              "now simulates every voxel's atom over the slice profile (12 positions): that fit, not the network, "
              "dominates (the network alone: docs/BENCHMARKS.md). Rerun on a quiet machine for absolute figures. "
              "A single-process wall time per slice on this machine (median after a warm-up), through the gadget's "
              "`reconstruct` on all 16,384 voxels: the network time includes the M0 fit (the network alone: 13.5 ms, "
              "docs/BENCHMARKS.md, which also has the ≤ 10 ms goal). SVD compression barely helps on a CPU: the "
              "search is GEMM-bound either way. Matching here is an exact "
              "search with float32 GEMMs over all 79,900 atoms (docs/BENCHMARKS.md explains why it is faster than the "
              "paper's ~3 s, so the speed-up is smaller than its ~300×).",
    "crb": "√CRB is the smallest sd an unbiased estimator can have at that noise. At low SNR both estimators are near "
           "it. At high SNR matching's error is set by the dictionary's grid step rather than by the noise: its "
           "estimates snap to a few atoms (sd can even fall below √CRB, while the bias stays), so its RMSE grows "
           "relative to the bound; the network degrades more gracefully.",
    "physics": "Every signal here is simulated with the default schedule's pulse (Hann sinc, TBW 4; profile from a "
               "spinor simulation) and the given B1. 'Uncorrected' is the best any estimator can do that assumes an "
               "ideal slice and B1 = 1: matching against a fine dictionary of that model, so its errors are the "
               "model's, not a grid's. The network without a B1 map knows the pulse but assumes B1 = 1; with the map "
               "it takes each voxel's B1 as an input. Matching with the map searches only the dictionary's B1 plane "
               "nearest to the voxel's (planes every 0.05), on the paper grid's 10 ms steps, so its T2 error includes "
               "the grid step. The paper grid's Cramér–Rao bound shows what the slice profile costs: the profile "
               "averages the flip angles over the slice and weakens the T2 encoding of this schedule, so at 0.5 % "
               "noise no unbiased estimator can match the ideal slice's T2 precision.",
}


def render(folder: Path, rel: str) -> str:
    """The Markdown page for the JSON files in ``folder`` (figures linked as ``rel/<png>``)."""
    records = _load(folder)
    head = ["# Results: the DRONE paper's experiments, reproduced", "",
            "Each row is one `drone experiments NAME --out docs/results` run (figures and a JSON of every number in "
            "`docs/results/`); this page is generated from those JSON files by "
            "`python -m drone_training.experiments.report docs/results docs/RESULTS.md`. The `--quick` variant of each "
            "runs in the test suite (`tests/test_experiments.py`) and asserts the paper's qualitative claims. "
            "Times are each experiment's wall time on this machine (interpreter start-up not included).", ""]
    m = next(iter(records.values()))["machine"] if records else {}
    head += [f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, GPU: {m.get('cuda') or 'none'}; the "
             f"versions of Python, torch and numpy are in each JSON.", "",
             "| paper | the paper's numbers | ours | command | time |", "|---|---|---|---|---|"]
    body: list[str] = []
    for name, (title, paper, section) in _SECTIONS.items():
        record = records.get(name)
        command = f"`drone experiments {name} --out docs/results`"
        if record is None:
            head.append(f"| {title} | {paper} | not run yet | {command} | – |")
            continue
        ours, lines = section(record)
        head.append(f"| {title} | {paper} | {ours} | {command} | {_time(record)} |")
        body += ["", f"## {title}", "", _READING[name], "", *_figures(record, rel), "", *lines]
    return "\n".join(head + body) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m drone_training.experiments.report RESULTS_DIR OUT.md", file=sys.stderr)
        return 2
    folder, out = Path(args[0]), Path(args[1])
    rel = Path(os.path.relpath(folder.resolve(), out.resolve().parent)).as_posix()
    out.write_text(render(folder, rel), encoding="utf-8")
    print(f"wrote {out} from {len(_load(folder))} experiment(s) in {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
