"""When Richardson–Lucy stops: the rules, checked after each measured iteration.

* **discrepancy** (Morozov 1966): the model explains the pixels that hold signal to within
  their noise, reduced ``χ² ≤ 1``. On frames whose PSF does not describe every star exactly
  (a PSF measured from a few stars, a plate's field-dependent image, a non-linear emulsion)
  ``χ²`` levels off above 1 and this never fires.
* **plateau**: ``χ²`` still above 1 but no longer falling — the last ``PLATEAU_SPAN``
  iterations each gained less than ``plateau`` of it (relative). The misfit that is left is
  what the model cannot describe (the PSF's mismatch, structure the window removed), not
  unfitted signal; more iterations only fit noise into the sky (the noise amplification that
  makes RL a semi-convergent method; Bertero & Boccacci 1998, ch. 6). This is the
  discrepancy principle's counterpart when the attainable floor is above 1.
* **tolerance**: the estimate's relative change in an iteration falls below it (asked for).
* **iterations**: the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.restoration.richardson_lucy_kernels import STAT

PLATEAU_SPAN = 3


def measured(values: np.ndarray, with_chi2: bool) -> tuple[float, float | None]:
    """The relative change and (``with_chi2``: a noise model was given) the reduced ``χ²`` of
    the signal pixels, from the statistics buffer an iteration filled."""
    total = values[STAT["TOTAL"]]
    change = float(values[STAT["CHANGE"]] / total) if total > 0 else 0.0
    count = values[STAT["CHI2_COUNT"]]
    chi2 = float(values[STAT["CHI2"]] / count) if with_chi2 and count > 0 else None
    return change, chi2


@dataclass
class StoppingRule:
    """The rules of one run: ``noise_rules`` turns on the discrepancy rule and, when
    ``plateau`` > 0, the plateau rule (they need a noise model's ``χ²``); ``tolerance`` the
    change rule; ``history`` keeps each measured ``χ²``."""

    noise_rules: bool
    plateau: float = 0.0
    tolerance: float | None = None
    history: list[float] = field(default_factory=list)

    @property
    def needs_chi2(self) -> bool:
        """Whether every iteration must measure ``χ²``."""
        return self.noise_rules

    def reason(self, chi2: float | None, change: float) -> str | None:
        """Why the run stops after an iteration with reduced ``chi2`` and relative ``change``;
        None to go on."""
        if chi2 is not None:
            self.history.append(chi2)
        if chi2 is not None and self.noise_rules:
            if chi2 <= 1.0:
                return "discrepancy"
            if self.plateau > 0 and self._levelled_off():
                return "plateau"
        if self.tolerance is not None and change < self.tolerance:
            return "tolerance"
        return None

    def _levelled_off(self) -> bool:
        recent = self.history[-(PLATEAU_SPAN + 1):]
        if len(recent) <= PLATEAU_SPAN:
            return False
        return all(before - after < self.plateau * before
                   for before, after in zip(recent, recent[1:]))
