"""What a PRUNED trial records, and how PRUNED trials are counted.

A trial is stored PRUNED (never COMPLETE: never on the front, never exported, not in
the budget's count) when

- its untrained final form missed a hard constraint (search.trial.feasibility): it never
  trained; `pruned_at_epoch` = 0;
- MO-ASHA stopped it at a rung (search.driver.moasha): `pruned_at_epoch` = that rung's epoch.

Its user attrs (plain JSON, readable by `optuna.load_study` and optuna-dashboard's
"include PRUNED"): `prune_reason` (one line), `pruned_at_epoch`, `pretrain` (the
static metrics measured before training), `rung_<epoch>` (MO-ASHA's record at each
rung it reached) and, with constraints, `constraints` (violations from `pretrain`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from search.core.records import EPOCH_ATTR, REASON_ATTR  # noqa: F401 - the records read here, importable from here too

BEFORE_TRAINING = "before training"
AT_RUNG = "at a rung"


def stage(trial: FrozenTrial) -> str | None:
    """BEFORE_TRAINING or AT_RUNG for a PRUNED trial (AT_RUNG when it does not say), else None."""
    if trial.state != TrialState.PRUNED:
        return None
    return BEFORE_TRAINING if trial.user_attrs.get(EPOCH_ATTR) == 0 else AT_RUNG


def counts(trials: Iterable[FrozenTrial]) -> Counter:
    """PRUNED trials by stage: {"before training": 3, "at a rung": 2}."""
    return Counter(s for s in map(stage, trials) if s is not None)


def describe(counted: Counter) -> str:
    """'3 before training, 2 at a rung' (the stages that occur)."""
    return ", ".join(f"{counted[s]} {s}" for s in (BEFORE_TRAINING, AT_RUNG) if counted.get(s))
