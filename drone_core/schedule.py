"""MRF acquisition schedules: flip angles, repetition times, TE, TI and inversion efficiency.

A schedule is everything the signal model needs besides the tissue: per-frame flip angles
(degrees) and repetition times (ms), one echo time, one inversion time and the inversion
efficiency. It is stored as JSON (``DESIGN.md``, "Files and formats")::

    {"name": str, "flip_angle_deg": [N floats], "tr_ms": [N floats],
     "te_ms": float, "ti_ms": float, "inversion_efficiency": float,
     "excitation": {"shape": "sinc", "time_bandwidth": float, "apodization": "hann" | "hamming" | "none"}}

``excitation`` is optional: without it the slice profile is ideal (every isochromat sees the
nominal flip angle, the model before slice profiles were added); with it the signal is the slice
integral over the pulse's flip-angle profile (:mod:`drone_core.excitation`).

Loading validates every field and names the one that is wrong. :meth:`Schedule.digest` is a
stable fingerprint of the physics (not the name), so a model can tell whether a signal was
acquired with its own schedule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .excitation import Excitation
from .validation import check_fields, finite_number

__all__ = ["Schedule", "default_schedule", "DEFAULT_SCHEDULE_NAME"]

#: File name of the package's default schedule under ``drone_core/schedules``.
DEFAULT_SCHEDULE_NAME = "epi_mrf_25.json"

_FIELDS = ("name", "flip_angle_deg", "tr_ms", "te_ms", "ti_ms", "inversion_efficiency", "excitation")

#: Number of decimals kept by :meth:`Schedule.digest` (values are rounded so that a JSON
#: round trip or a float32 copy of the schedule gives the same digest).
_DIGEST_DECIMALS = 4


def _as_float(value: Any, name: str) -> float:
    return finite_number(value, f"schedule field {name!r}")


def _as_float_list(value: Any, name: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"schedule field {name!r}: expected a list of numbers, got {type(value).__name__}")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise ValueError(f"schedule field {name!r}: expected a flat list, got shape {value.shape}")
    items = value.tolist() if isinstance(value, np.ndarray) else list(value)
    return tuple(_as_float(v, f"{name}[{i}]") for i, v in enumerate(items))


@dataclass(frozen=True)
class Schedule:
    """An MRF schedule (immutable, validated on construction).

    Attributes:
        name: free text label.
        flip_angle_deg: nominal flip angle of each frame, degrees, ``(n_frames,)``, 0 < α ≤ 180.
        tr_ms: repetition time of each frame, ms, ``(n_frames,)``, each > ``te_ms``.
        te_ms: echo time (RF to sampled F0), ms, > 0.
        ti_ms: inversion time (inversion to first RF), ms, ≥ 0.
        inversion_efficiency: η in Mz → (1 − 2η)·Mz; 1 is a perfect inversion, 0 none. In [0, 1].
        excitation: the slice-selective pulse (:class:`~drone_core.excitation.Excitation`), or None
            for an ideal rectangular slice profile.
    """

    name: str
    flip_angle_deg: tuple[float, ...]
    tr_ms: tuple[float, ...]
    te_ms: float
    ti_ms: float
    inversion_efficiency: float = 1.0
    excitation: Excitation | None = None
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"schedule field 'name': expected a string, got {type(self.name).__name__}")
        fa = _as_float_list(self.flip_angle_deg, "flip_angle_deg")
        tr = _as_float_list(self.tr_ms, "tr_ms")
        te = _as_float(self.te_ms, "te_ms")
        ti = _as_float(self.ti_ms, "ti_ms")
        eta = _as_float(self.inversion_efficiency, "inversion_efficiency")
        if len(fa) == 0:
            raise ValueError("schedule field 'flip_angle_deg': expected at least one frame, got an empty list")
        if len(tr) != len(fa):
            raise ValueError(
                f"schedule field 'tr_ms': expected {len(fa)} values (one per flip angle), got {len(tr)}")
        for i, a in enumerate(fa):
            if not 0.0 < a <= 180.0:
                raise ValueError(f"schedule field 'flip_angle_deg[{i}]': expected 0 < α ≤ 180 degrees, got {a}")
        if te <= 0.0:
            raise ValueError(f"schedule field 'te_ms': expected > 0 ms, got {te}")
        for i, t in enumerate(tr):
            if not t > te:
                raise ValueError(f"schedule field 'tr_ms[{i}]': expected TR > TE = {te} ms, got {t}")
        if ti < 0.0:
            raise ValueError(f"schedule field 'ti_ms': expected ≥ 0 ms, got {ti}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"schedule field 'inversion_efficiency': expected 0 ≤ η ≤ 1, got {eta}")
        object.__setattr__(self, "flip_angle_deg", fa)
        object.__setattr__(self, "tr_ms", tr)
        object.__setattr__(self, "te_ms", te)
        object.__setattr__(self, "ti_ms", ti)
        object.__setattr__(self, "inversion_efficiency", eta)
        if isinstance(self.excitation, dict):
            object.__setattr__(self, "excitation", Excitation.from_dict(self.excitation))
        elif self.excitation is not None and not isinstance(self.excitation, Excitation):
            raise TypeError(f"schedule field 'excitation': expected an Excitation, a JSON object or None, got "
                            f"{type(self.excitation).__name__}")
        object.__setattr__(self, "_digest", self._compute_digest())

    # ------------------------------------------------------------------ properties
    @property
    def n_frames(self) -> int:
        """Number of frames N."""
        return len(self.flip_angle_deg)

    @property
    def duration_ms(self) -> float:
        """Total acquisition time TI + Σ TR_i, ms."""
        return self.ti_ms + float(sum(self.tr_ms))

    def digest(self) -> str:
        """Stable SHA-256 (hex, 16 characters) of the physics: flip angles, TRs, TE, TI, η, excitation.

        The name is not part of it. A schedule without an excitation has the digest it had before
        excitations existed, so older model files still load. Values are rounded to 4 decimals
        first, so a JSON round trip or a float32 copy gives the same digest.
        """
        return self._digest

    def _compute_digest(self) -> str:
        payload = json.dumps(self._physics_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def _physics_dict(self) -> dict[str, Any]:
        r = _DIGEST_DECIMALS

        def rnd(x: float) -> float:
            return round(float(np.float32(x)), r) + 0.0  # +0.0: no "-0.0"

        physics: dict[str, Any] = {
            "flip_angle_deg": [rnd(a) for a in self.flip_angle_deg],
            "tr_ms": [rnd(t) for t in self.tr_ms],
            "te_ms": rnd(self.te_ms),
            "ti_ms": rnd(self.ti_ms),
            "inversion_efficiency": rnd(self.inversion_efficiency),
        }
        if self.excitation is not None:
            exc = self.excitation.to_dict()
            exc["time_bandwidth"] = rnd(exc["time_bandwidth"])
            physics["excitation"] = exc
        return physics

    def same_physics(self, other: "Schedule") -> bool:
        """True when ``other`` has the same digest (same frames, TE, TI, η, excitation; name ignored)."""
        return self.digest() == other.digest()

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict of the file format."""
        out: dict[str, Any] = {
            "name": self.name,
            "flip_angle_deg": list(self.flip_angle_deg),
            "tr_ms": list(self.tr_ms),
            "te_ms": self.te_ms,
            "ti_ms": self.ti_ms,
            "inversion_efficiency": self.inversion_efficiency,
        }
        if self.excitation is not None:
            out["excitation"] = self.excitation.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Schedule":
        """Build from the file format's dict; missing or unknown fields are named in the error."""
        check_fields(data, "schedule", _FIELDS, optional=("inversion_efficiency", "excitation"))
        return cls(
            name=data["name"],
            flip_angle_deg=data["flip_angle_deg"],
            tr_ms=data["tr_ms"],
            te_ms=data["te_ms"],
            ti_ms=data["ti_ms"],
            inversion_efficiency=data.get("inversion_efficiency", 1.0),
            excitation=None if data.get("excitation") is None else Excitation.from_dict(data["excitation"]),
        )

    def to_json(self) -> str:
        """The schedule as a JSON string (the file format)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        """Parse the file format from a string."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"schedule: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "Schedule":
        """Read and validate a schedule JSON file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"schedule path {str(path)!r}: cannot read ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"schedule path {str(path)!r}: not UTF-8 text ({exc.reason})") from exc
        try:
            return cls.from_json(text)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write the schedule as JSON (UTF-8, indented)."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ arrays
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(flip_angle_deg, tr_ms)`` as float64 arrays of shape ``(n_frames,)``."""
        return np.asarray(self.flip_angle_deg, dtype=np.float64), np.asarray(self.tr_ms, dtype=np.float64)

    def replace(self, **changes: Any) -> "Schedule":
        """A copy with some fields changed (validated again); ``excitation=None`` removes the pulse."""
        data = self.to_dict()
        data.update({k: (v.to_dict() if isinstance(v, Excitation) else v) for k, v in changes.items()})
        return Schedule.from_dict(data)

    def ideal(self) -> "Schedule":
        """The same schedule with an ideal slice profile (no excitation)."""
        return self if self.excitation is None else self.replace(excitation=None)


def default_schedule() -> Schedule:
    """The package's default 25-frame EPI-MRF schedule (``drone_core/schedules/epi_mrf_25.json``).

    Designed by minimising the Cramér–Rao cost over WM, GM and CSF; see ``docs/SCHEDULE.md``.
    """
    text = resources.files("drone_core.schedules").joinpath(DEFAULT_SCHEDULE_NAME).read_text(encoding="utf-8")
    return Schedule.from_json(text)
