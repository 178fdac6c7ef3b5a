"""The names under which paretune keeps what it knows in the Optuna storage.

A study's or trial's attrs are paretune's records: written by one module, read by
many (the front, progress, export, tracking, the next launch). Their names live here,
apart from the code that writes them, so that a module reading a record need not
import the module that writes it. Changing a name here orphans what studies already
hold under the old one.
"""

from __future__ import annotations

# --- study user attrs (search.driver.launcher) ------------------------------------------------
OBJECTIVES_ATTR = "objectives"  # the objectives' names, in the order of trial.values
SPEC_ATTR = "spec"  # the study's spec as TOML-able data (constraints as text)
TASK_KIND_ATTR = "task_kind"  # "image", "table", ...: what kind of task the study searches
MLFLOW_ATTR = "mlflow"  # the tracking URI its searches log to (search.results.tracking); export, train read it

# --- study system attrs --------------------------------------------------------------
RECORD_PREFIX = "paretune:driver:"  # one heartbeat record per driver (search.driver.lease)
# How Optuna's upload_artifact (and optuna-dashboard, reading them) keys an artifact's
# metadata among a trial's or study's system attrs: a JSON string (search.results.dashboard).
ARTIFACT_PREFIX = "artifacts:"

# --- trial system attrs --------------------------------------------------------------
DRIVER_ATTR = "paretune:driver"  # the id of the driver that asked the trial (search.driver.lease)
FIXED_PARAMS_ATTR = "fixed_params"  # params set before sampling; Optuna's own key for them (search.trial.variants)

# --- trial user attrs: outcome (search.driver.tell) -------------------------------------------
FAIL_REASON_ATTR = "fail_reason"
CONSTRAINTS_ATTR = "constraints"  # violations, one per spec constraint (<= 0: met)
RETRY_OF_ATTR = "retry_of"  # on a queued trial: the number of the interrupted trial it re-runs
SEED_ATTR = "seed"  # set once a trial's params are all chosen (search.driver.searcher)
BASELINE_ATTR = "baseline"  # on the study's baseline trial (search.tasks.baseline); kept by a re-run
INTERRUPTED_PREFIX = "interrupted"  # how the fail reason of a trial cut short begins
RECORDED_FOR_ATTR = "recorded_for"  # on a trial holding a late result: the trial it belongs to

# --- trial user attrs: pruning (search.driver.pruned) ------------------------------------------
REASON_ATTR = "prune_reason"  # why a PRUNED trial was stopped
EPOCH_ATTR = "pruned_at_epoch"  # the epoch a PRUNED trial was stopped at (0: before training)

# --- trial user attrs: rungs (search.driver.rung_trust, search.driver.moasha) -------------------------
RUNG_PREFIX = "rung_"  # + epoch: a trial's record at that rung
TRAINED_ATTR = "trained_accuracy"  # validation accuracy after the last training epoch

# --- trial user attrs: variants (search.trial.variants) ---------------------------------------
TRAINING_ATTR = "training_trial"  # on every trial of a group: the number of the trial holding the training

# --- trial user attrs written by other modules -----------------------------------------
PRETRAIN_ATTR = "pretrain"  # measurements before training (search.trial.feasibility.ATTR)
PRETRAIN_PREFIX = "pretrain_"  # a pre-training measurement in a result (search.trial.feasibility.PREFIX)
TIMING_ATTR = "timing"  # where a trial's time went (search.trial.timing.ATTR)
ENQUEUED_ATTR = "enqueued_from"  # a warm-started trial's origin (search.driver.warmstart)
