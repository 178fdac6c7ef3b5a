"""Train once, compress many: the post-training variants of one training.

With `[budget] variants_per_training = N`, the searcher asks a trial as usual (the
training) and N - 1 more trials that share its training params: the params of every
dimension that acts before or during training (model, recipe, regularization,
distillation, augmentation) are fixed to the training's, the rest (the dimensions
`after_training`: pruning and its fine-tune, quantization, runtime) are proposed by
the sampler. Each variant is its own Optuna trial, created RUNNING with Optuna's own
`fixed_params` mechanism (what `enqueue_trial` uses) so that no other driver can take
it, and marked with the number of the trial that holds the training
(`training_trial`) and that trial's seed.

All of them travel in one Tune trial: the worker trains once and derives each
variant from a copy of the trained weights (search.trial.pipeline.run_group), and reports
their results in its last result (`KEY`, JSON). A variant so costs no Ray round trip
of its own. Retraining one (`paretune train`) runs the shared training with the
recorded seed, then the variant's own steps: the same model.
"""

from __future__ import annotations

import json
import math

import optuna

import spaces
from search.core import optuna_internals
from search.core.errors import UsageError
from search.core.records import FIXED_PARAMS_ATTR, TRAINING_ATTR
from search.tasks.plugins import dimensions

KEY = "variants"  # in a Tune config: [{"params", "number"}]; in its last result: JSON of their results


def shared_params(params: dict, owners: dict) -> dict:
    """The Optuna params a variant shares with its training: those of the dimensions
    that act before or during training (`owners`: Optuna name -> dimension)."""
    return {name: value for name, value in params.items() if name in owners and not owners[name].after_training}


def ask(study: optuna.Study, fixed: dict) -> optuna.Trial:
    """A new RUNNING trial whose `fixed` params are set and the rest left to the sampler.
    Not `enqueue_trial` + `ask`: a WAITING trial could be taken by another driver, and
    this ask would take whatever is queued."""
    storage = optuna_internals.storage_of(study)
    trial_id = storage.create_new_trial(optuna_internals.study_id(study))
    storage.set_trial_system_attr(trial_id, FIXED_PARAMS_ATTR, fixed)
    optuna_internals.forget_cached_trials(study)  # what `Study.ask` does: sample on fresh trials
    return optuna.Trial(study, trial_id)


def check(spec, plugins=None) -> None:
    """Before Ray starts: every dimension can differ between variants of one training."""
    if spec.budget.variants_per_training <= 1:
        return
    for dimension in dimensions(plugins):
        if dimension.after_training:
            why = dimension.variant_conflict(spaces.section(spec, dimension))
            if why:
                raise UsageError(f"budget.variants_per_training = {spec.budget.variants_per_training}: space.{dimension.name}: {why}; "
                                 "remove that choice or set variants_per_training = 1")


def encode(results: list[dict]) -> str:
    """The variants' results as one JSON value (Tune flattens nested dicts of a result);
    NaN becomes null."""
    def plain(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps([{k: plain(v) for k, v in r.items()} for r in results])


def decode(result: dict | None) -> list[dict]:
    text = (result or {}).get(KEY)
    return json.loads(text) if text else []


def count_words(trainings: int, trials: int, front: int | None = None) -> str:
    """`12 trainings → 48 variants, 9 on the front`."""
    words = f"{trainings} training{'s' if trainings != 1 else ''} → {trials} variant{'s' if trials != 1 else ''}"
    return words + (f", {front} on the front" if front is not None else "")


def training_of(trial) -> int:
    """The number of the trial holding `trial`'s training (its own without variants)."""
    value = trial.user_attrs.get(TRAINING_ATTR)
    return int(value) if value is not None else trial.number


def trainings(trials) -> int:
    """How many trainings the given trials came from."""
    return len({training_of(t) for t in trials})
