"""The same search from Python, with a training loop of your own (no spec file needed
beyond the example's): `python examples/own_model/api.py [TRIALS]`.

The loop follows paretune's contract (search/trial/training.py): it uses the optimizer and
schedule paretune built from the searched params, and calls the hooks the other
dimensions need (augmentation, the loss with label smoothing/distillation/L1, gradual
pruning's end of epoch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import search

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import build  # noqa: E402 - the example's model, beside this file


def fit(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks):
    for epoch in range(epochs):
        model.train()
        for inputs, labels in train_loader:
            hooks.pause()
            inputs, labels = hooks.transform(inputs.to(hooks.device)), labels.to(hooks.device)
            logits = model(inputs)
            loss = hooks.loss(model, inputs, logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            hooks.after_backward(model)
            optimizer.step()
            scheduler.step()
        hooks.end_epoch(epoch)
        report(epoch, hooks.accuracy(model, val_loader))


if __name__ == "__main__":
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    spec = search.as_spec(HERE / "spec.toml")  # the example's spec: data, knobs, dimensions
    spec = spec.model_copy(update={"name": "glyphs-api", "budget": spec.budget.model_copy(update={"trials": trials})})
    study = search.launch(spec, model=build, train=fit)
    report = search.front(study)
    print(f"{len(report.front)} on the front of {len(report.feasible)} trials, hypervolume {report.hypervolume:.4g}")
    config = search.export(study, HERE / "glyphs-api-best.toml")
    result = search.train(config, HERE / "glyphs-api_model", model=build, train=fit)
    for row in result.card["objectives"]:
        print(f"{row['name']}: search {row['search_val']:.4g}, retrained (test) {row['retrained_test']:.4g}")
