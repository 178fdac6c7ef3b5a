"""A trial as Ray Tune runs it: `trainable` wraps the pipeline (search.trial.pipeline) for a
worker. It reports validation accuracy at the epochs MO-ASHA may stop at and the final
metrics once, checks the untrained form first where a constraint or MO-ASHA needs it
(search.trial.feasibility), runs a training's variants together (search.trial.variants), and
turns an exception inside the trial into a reported failure (stored as FAIL with its
reason), so one bad trial never stops the search.
"""

from __future__ import annotations

import json
import time
import traceback

import torch

import spaces
from search.core.records import EPOCH_ATTR, REASON_ATTR
from search.core.spec import StudySpec
from search.tasks.plugins import Plugins
from search.tasks.task import Task
from search.trial import feasibility, timing, variants
from search.trial.metrics import TrialMetrics
from search.trial.pipeline import run_group, run_pipeline


def milestones(grace_epochs: int, reduction_factor: float, epochs: int) -> list[int]:
    """Rung epochs: grace × factor^k, rounded, strictly below `epochs`."""
    rungs: list[int] = []
    k = 0
    while True:
        epoch = int(round(grace_epochs * reduction_factor**k))
        if epoch >= epochs:
            return rungs
        if not rungs or epoch > rungs[-1]:
            rungs.append(epoch)
        k += 1


def report_epochs(spec: StudySpec) -> tuple[int, ...]:
    """The epochs (1-based) whose validation accuracy a trial reports to Tune: the rung
    epochs of MO-ASHA, none without early stopping. A report is a round trip to the
    search's event loop (the trial waits for it) and a validation pass; nothing else
    reads per-epoch results."""
    if spec.stopping == "none":
        return ()
    rungs = milestones(spec.budget.grace_epochs, spec.budget.reduction_factor, spec.budget.epochs)
    # "auto" also hears the last epoch: the trained accuracy its rungs are trusted on (search.driver.rung_trust).
    return (*rungs, spec.budget.epochs) if spec.stopping == "auto" else tuple(rungs)


def trainable(config: dict, task: Task, spec: StudySpec, shared: dict | None = None, plugins: Plugins | None = None) -> None:
    """Ray Tune function trainable. `config` = {"params", "seed", "number"} from the
    searcher; `shared` and `plugins` travel like `task` through `tune.with_parameters`,
    so each sits once in the object store.

    Where the spec has a constraint that can be judged before training, or searches
    with MO-ASHA, the trial first measures its untrained final form
    (search.trial.feasibility): infeasible, it reports `prune_reason` and stops there;
    otherwise every result carries those values (`pretrain_*`), the static part of
    MO-ASHA's rung vectors. The last result carries the trial's phases
    (`search.trial.timing`)."""
    from ray import tune  # deferred: the worker imports Ray Tune already; tests call the pipeline without it


    before: dict = {}
    worker_start = time.time()

    def report_epoch(epoch: int, val_accuracy: float) -> None:
        with timing.waiting("report"):
            tune.report({"epoch": epoch + 1, "val_accuracy": val_accuracy, **before})

    def last(result: dict) -> None:
        marks = {"worker_start": worker_start, "worker_end": time.time()}
        # As JSON text: Tune flattens nested dicts of a result before the searcher sees it.
        tune.report({**result, timing.ATTR: json.dumps({"phases": timeline.as_dict(), "marks": marks})})

    with timing.record() as timeline:
        if config.get(variants.KEY):
            return last(_run_group_results(config, task, spec, shared, plugins, report_epoch, before))
        try:
            if feasibility.needed(spec, task.kind):
                with timing.phase("check"):
                    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
                    verdict = feasibility.check(config["params"], task, spec, config["seed"], plugins=plugins, shared=shared)
                if verdict.reason is not None:
                    return last({REASON_ATTR: verdict.reason, EPOCH_ATTR: 0, **verdict.result()})
                before = verdict.result()
            result = run_pipeline(config["params"], task, spec, config["seed"], on_epoch=report_epoch, shared=shared,
                                  plugins=plugins, report_epochs=report_epochs(spec))
        except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure reason
            return last(_failure(exc))
        metrics = result.metrics.to_result() if isinstance(result.metrics, TrialMetrics) else result.metrics
        last({**metrics, **before, "done": True})


def _failure(exc: BaseException) -> dict:
    return {"fail_reason": spaces.first_line(exc)[:500], "traceback": traceback.format_exc()[-2000:]}


def _run_group_results(config: dict, task: Task, spec: StudySpec, shared, plugins, report_epoch, before: dict) -> dict:
    """A training and its variants (search.trial.variants): the training trial's result, with
    each variant's result under `variants.KEY`. A member infeasible before training is
    left out of the group's steps (its result says why); the group trains if any member
    is feasible, and reports the pre-training values of its first feasible member
    (into `before`, which its epoch reports carry)."""

    members = [config["params"]] + [v["params"] for v in config[variants.KEY]]
    outcomes: list[dict | None] = [None] * len(members)
    befores: list[dict] = [{} for _ in members]

    def packed() -> dict:
        numbers = [v["number"] for v in config[variants.KEY]]
        return {**outcomes[0], variants.KEY: variants.encode([{"number": n, **o} for n, o in zip(numbers, outcomes[1:])])}

    try:
        if feasibility.needed(spec, task.kind):
            with timing.phase("check"):
                torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
                for i, params in enumerate(members):
                    verdict = feasibility.check(params, task, spec, config["seed"], plugins=plugins, shared=shared)
                    if verdict.reason is not None:
                        outcomes[i] = {REASON_ATTR: verdict.reason, EPOCH_ATTR: 0, **verdict.result()}
                    else:
                        befores[i] = verdict.result()
            if all(o is not None for o in outcomes):
                return packed()
            before.update(next(b for o, b in zip(outcomes, befores) if o is None))
        results = run_group([p if o is None else None for p, o in zip(members, outcomes)], task, spec, config["seed"],
                            on_epoch=report_epoch, shared=shared, plugins=plugins, report_epochs=report_epochs(spec))
    except Exception as exc:  # noqa: BLE001 - the shared training failed: every member with it
        failure = _failure(exc)
        outcomes = [o if o is not None else failure for o in outcomes]
        return packed()
    for i, result in enumerate(results):
        if outcomes[i] is not None:
            continue
        if isinstance(result, Exception):
            outcomes[i] = {"fail_reason": spaces.first_line(result)[:500]}
        else:
            outcomes[i] = {**result.metrics.to_result(), **befores[i], "done": True}
    return packed()
