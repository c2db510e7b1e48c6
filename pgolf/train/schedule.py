"""Wall-clock aware learning-rate schedule.

The warmdown is time based: lr_scale = min(1, remaining / (warmdown_frac * budget)), with
remaining measured on the training clock, so the lr reaches 0 exactly when the budget
(``train_seconds``) runs out whatever the step time turns out to be; no step-time
estimate can be wrong. With ``max_steps`` the progress is the larger of the time and
step fractions, which makes short test runs deterministic.

``min_lr_frac`` (leaderboard PR #1787's MIN_LR) floors the warmdown: the scale decays
linearly to the floor and stays there until the budget ends, so the last steps still move
the weights that EMA averages.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Schedule:
    train_seconds: float
    max_steps: int = 0
    warmdown_frac: float = 0.4
    lr_warmup_steps: int = 0
    min_lr_frac: float = 0.0

    def progress(self, step: int, elapsed_s: float) -> float:
        """Fraction of the budget used, in [0, 1]."""
        frac = elapsed_s / self.train_seconds
        if self.max_steps:
            frac = max(frac, step / self.max_steps)
        return min(1.0, max(0.0, frac))

    def lr_scale(self, step: int, elapsed_s: float) -> float:
        remaining = 1.0 - self.progress(step, elapsed_s)
        scale = min(1.0, remaining / self.warmdown_frac) if self.warmdown_frac > 0 else 1.0
        scale = max(scale, self.min_lr_frac)
        if remaining <= 0:
            scale = 0.0
        if self.lr_warmup_steps and step < self.lr_warmup_steps:
            scale *= (step + 1) / self.lr_warmup_steps
        return scale

    def done(self, step: int, elapsed_s: float) -> bool:
        return self.progress(step, elapsed_s) >= 1.0
