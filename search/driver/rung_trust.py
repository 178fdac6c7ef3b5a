"""Which rungs early stopping may act on: the study's own evidence, and a full bracket.

MO-ASHA (search.driver.moasha) trusts every rung. On a task whose early accuracy is near
chance (the own-model glyphs: Spearman 0.31–0.63 between epoch 2 and the end) it keeps
the fast models and stops the accurate ones, and a user cannot know beforehand which
kind of task theirs is. `early_stopping = "auto"` adds two guards:

- **A full-fidelity bracket.** One trial in `FULL_EVERY` (chosen by a hash of its
  number, so every driver and every resume agrees, and variants' gaps in the numbering
  do not bias it) is never judged: it trains to the end whatever the rungs say. As in
  Hyperband, a misleading rung cannot decide alone, and the study keeps getting
  unbiased evidence of how rungs rank.
- **Trusted rungs.** A rung judges only once the study has shown that it ranks trials
  as the end does: Kendall's τ between the accuracy recorded at the rung and the final
  accuracy, over the COMPLETE trials that recorded it, minus one standard error
  (τ's under independence, √(2(2n+5) / 9n(n−1))), must reach `TAU_FLOOR`, over at
  least `MIN_TRIALS` trials. An untrusted rung promotes every trial and says so
  ("rung 2: τ = 0.31 over 9 trials, not trusted yet"). Until some rung is trusted,
  every trial trains fully: the search is full fidelity.

The end a rung is compared with is the validation accuracy after the last training
epoch (`trained_accuracy`, recorded by "auto"): what a learning curve can tell. The
accuracy objective comes after pruning, quantization and runtime, whose losses no
rung can foresee and whose costs the rung already weighs exactly (measured before
training); measured on digits (30 trials, 30 epochs), that noise alone held τ at
rung 27 to 0.69. Studies without the record (MO-ASHA's) use the accuracy objective.
Trust is recomputed from the storage at each decision (trials of every driver and
every earlier run), so it is the same for everyone who reads the same storage, and each
decision records the τ it was made on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from search.core.records import RUNG_PREFIX, TRAINED_ATTR

FULL_EVERY = 4  # one trial in FULL_EVERY is in the full-fidelity bracket
MIN_TRIALS = 6  # a rung is judged on no fewer finished trials
TAU_FLOOR = 0.5  # τ − one standard error must reach this


def rung_key(epoch: int) -> str:
    return f"{RUNG_PREFIX}{epoch}"


def full_bracket(number: int) -> bool:
    """Whether trial `number` trains to the end whatever its rungs say."""
    digest = hashlib.sha256(f"paretune-bracket-{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % FULL_EVERY == 0


def kendall_tau(x: Iterable[float], y: Iterable[float]) -> float:
    """Kendall's τ-b of two samples (ties handled); NaN under 3 pairs or a constant sample."""
    from scipy.stats import kendalltau

    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(kendalltau(x, y).statistic)


def standard_error(n: int) -> float:
    """τ's standard error under independence for n pairs."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n >= 2 else math.inf


@dataclass(frozen=True)
class Trust:
    epoch: int
    tau: float  # NaN while there is too little evidence
    n: int  # finished trials that recorded the rung

    @property
    def lower(self) -> float:
        return self.tau - standard_error(self.n) if math.isfinite(self.tau) else -math.inf

    @property
    def trusted(self) -> bool:
        return self.n >= MIN_TRIALS and self.lower >= TAU_FLOOR

    def describe(self) -> str:
        """'rung 2: τ = 0.31 over 9 trials, not trusted yet'."""
        tau = f"τ = {self.tau:.2f}" if math.isfinite(self.tau) else "τ not known yet"
        verdict = "trusted" if self.trusted else "not trusted yet"
        return f"rung {self.epoch}: {tau} over {self.n} trial{'s' if self.n != 1 else ''}, {verdict}"

    def record(self) -> dict:
        """What a decision stores of the trust it was made on."""
        return {"tau": None if not math.isfinite(self.tau) else round(self.tau, 4), "n": self.n, "trusted": self.trusted}


def evidence(trials: Iterable[FrozenTrial], epoch: int, accuracy_index: int) -> tuple[list[float], list[float]]:
    """(accuracy at the rung, at the end) of the COMPLETE trials that recorded rung `epoch`."""
    key = rung_key(epoch)
    at_rung, final = [], []
    for trial in trials:
        record = trial.user_attrs.get(key)
        if trial.state != TrialState.COMPLETE or not isinstance(record, dict) or not trial.values:
            continue
        early = (record.get("values") or {}).get("accuracy")
        late = trial.user_attrs.get(TRAINED_ATTR, trial.values[accuracy_index])
        if isinstance(early, (int, float)) and math.isfinite(early) and math.isfinite(late):
            at_rung.append(float(early))
            final.append(float(late))
    return at_rung, final


def trust(trials: Iterable[FrozenTrial], epoch: int, accuracy_index: int) -> Trust:
    at_rung, final = evidence(trials, epoch, accuracy_index)
    return Trust(epoch, kendall_tau(at_rung, final), len(at_rung))


def rung_epochs(trials: Iterable[FrozenTrial]) -> list[int]:
    """The rung epochs any trial recorded, in order."""
    epochs = {
        int(key[len(RUNG_PREFIX):])
        for trial in trials
        for key in trial.user_attrs
        if key.startswith(RUNG_PREFIX) and key[len(RUNG_PREFIX):].isdigit()
    }
    return sorted(epochs)


def summary(trials: list[FrozenTrial], metric_names: list[str] | None) -> list[Trust]:
    """Each recorded rung's trust, for the progress display; [] without an accuracy objective."""
    if not metric_names or "accuracy" not in metric_names:
        return []
    index = metric_names.index("accuracy")
    return [trust(trials, epoch, index) for epoch in rung_epochs(trials)]
