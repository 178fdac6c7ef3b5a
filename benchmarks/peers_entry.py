"""One Syne Tune trial of the peers benchmark (benchmarks.peers): paretune's trial
pipeline on the config Syne Tune proposed, reporting every epoch as Syne Tune expects.

Run by Syne Tune's local backend as `python peers_entry.py --st_config_json_filename F`;
the config holds the flat params and `spec_path` (the study spec as JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, from Syne Tune's subprocess


def main() -> None:
    from syne_tune import Reporter
    from syne_tune.utils import add_config_json_to_argparse, load_config_json

    from benchmarks.peers import feasible, params_from, static_costs
    from search.core.spec import from_dict
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve
    from search.trial.pipeline import run_pipeline

    parser = argparse.ArgumentParser()
    add_config_json_to_argparse(parser)
    known, _ = parser.parse_known_args()  # Syne Tune adds --st_checkpoint_dir
    config = load_config_json(vars(known))
    spec = from_dict(json.loads(Path(config["spec_path"]).read_text()))
    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    params = params_from(config, spec, task.kind, plugins)
    costs = static_costs(params, task, spec, spec.seed, plugins)
    report = Reporter()

    # The last training epoch is not reported: MOASHA stops a trial that reaches max_t,
    # and this one still compresses and measures; its final report carries epoch max_t.
    def on_epoch(epoch: int, val_accuracy: float) -> None:
        report(epoch=epoch + 1, error=1.0 - val_accuracy, **{n: costs[n] for n in spec.objective_names[1:]}, final=0)

    result = run_pipeline(params, task, spec, spec.seed, on_epoch=on_epoch, plugins=plugins,
                          report_epochs=range(1, spec.budget.epochs))
    values = result.metrics.to_result()
    report(epoch=spec.budget.epochs, error=1.0 - values["accuracy"], **{n: values[n] for n in spec.objective_names[1:]},
           final=1, feasible=int(feasible(spec, values)))


if __name__ == "__main__":
    main()
