"""The scanner's gradient and RF hardware limits a sequence is written for.

A :class:`GradientSystem` holds what Pulseq's ``Opts`` needs: the gradient amplitude and slew-rate
limits, the raster times and the RF and ADC dead times. :data:`PRESETS` name a few common systems by
their nominal vendor specifications; the default, ``conservative``, stays below what current 1.5 T and
3 T whole-body systems offer so that a sequence written with it runs almost anywhere. Peripheral
nerve stimulation is not modelled: a site derates the slew rate where its scanner's PNS monitor
needs it (``--max-slew``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["GradientSystem", "PRESETS", "DEFAULT_SYSTEM", "gradient_system"]


@dataclass(frozen=True)
class GradientSystem:
    """Hardware limits (SI-like units named in each field).

    Attributes:
        name: what the limits are (a preset name, or "custom").
        max_grad_mt_per_m: gradient amplitude limit per axis, mT/m.
        max_slew_t_per_m_per_s: slew-rate limit per axis, T/m/s.
        grad_raster_us, rf_raster_us, adc_raster_us, block_raster_us: raster times, µs.
        rf_dead_time_us: time before an RF pulse in its block (coil switching), µs.
        rf_ringdown_time_us: time after an RF pulse in its block, µs.
        adc_dead_time_us: time before and after an ADC in its block, µs.
    """

    name: str = "conservative"
    max_grad_mt_per_m: float = 40.0
    max_slew_t_per_m_per_s: float = 150.0
    grad_raster_us: float = 10.0
    rf_raster_us: float = 1.0
    adc_raster_us: float = 0.1
    block_raster_us: float = 10.0
    rf_dead_time_us: float = 100.0
    rf_ringdown_time_us: float = 30.0
    adc_dead_time_us: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_grad_mt_per_m", "max_slew_t_per_m_per_s", "grad_raster_us", "rf_raster_us",
                     "adc_raster_us", "block_raster_us"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        for name in ("rf_dead_time_us", "rf_ringdown_time_us", "adc_dead_time_us"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name}: expected a finite number ≥ 0, got {value!r}")
        if self.max_grad_mt_per_m > 200 or self.max_slew_t_per_m_per_s > 1000:
            raise ValueError(f"gradient system {self.name!r}: {self.max_grad_mt_per_m:g} mT/m, "
                             f"{self.max_slew_t_per_m_per_s:g} T/m/s is beyond any whole-body scanner "
                             f"(units: mT/m and T/m/s)")

    def with_limits(self, max_grad_mt_per_m: float | None = None,
                    max_slew_t_per_m_per_s: float | None = None) -> "GradientSystem":
        """The same system with other amplitude or slew limits (named "custom" when changed)."""
        changed = {k: v for k, v in (("max_grad_mt_per_m", max_grad_mt_per_m),
                                     ("max_slew_t_per_m_per_s", max_slew_t_per_m_per_s)) if v is not None}
        return replace(self, name="custom", **changed) if changed else self

    def opts(self) -> Any:
        """pypulseq's ``Opts`` for these limits."""
        import pypulseq as pp

        return pp.Opts(max_grad=self.max_grad_mt_per_m, grad_unit="mT/m", max_slew=self.max_slew_t_per_m_per_s,
                       slew_unit="T/m/s", grad_raster_time=self.grad_raster_us * 1e-6,
                       rf_raster_time=self.rf_raster_us * 1e-6, adc_raster_time=self.adc_raster_us * 1e-6,
                       block_duration_raster=self.block_raster_us * 1e-6,
                       rf_dead_time=self.rf_dead_time_us * 1e-6, rf_ringdown_time=self.rf_ringdown_time_us * 1e-6,
                       adc_dead_time=self.adc_dead_time_us * 1e-6)

    def describe(self) -> str:
        return f"{self.name} ({self.max_grad_mt_per_m:g} mT/m, {self.max_slew_t_per_m_per_s:g} T/m/s)"


#: Named systems: nominal per-axis gradient specifications (amplitude, slew rate).
PRESETS: dict[str, GradientSystem] = {
    "conservative": GradientSystem(),
    "siemens-prisma": GradientSystem("siemens-prisma", 80.0, 200.0),
    "ge-mr750": GradientSystem("ge-mr750", 50.0, 200.0),
    "philips-achieva-dual": GradientSystem("philips-achieva-dual", 40.0, 200.0),
}
#: The system used when none is named.
DEFAULT_SYSTEM = "conservative"


def gradient_system(name: str = DEFAULT_SYSTEM, *, max_grad_mt_per_m: float | None = None,
                    max_slew_t_per_m_per_s: float | None = None) -> GradientSystem:
    """A preset by name, optionally with other amplitude or slew limits.

    Raises:
        ValueError: an unknown preset name (the known ones are listed).
    """
    if name not in PRESETS:
        raise ValueError(f"system: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name].with_limits(max_grad_mt_per_m, max_slew_t_per_m_per_s)
