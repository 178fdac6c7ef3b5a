"""Train the example's model the way you would before any search, and save its weights:
`python examples/own_model/make_checkpoint.py` writes examples/own_model/model.pt.

This stands for the model you already have: the small ResNet of model.py at one
setting of its knobs (width 16, 2 blocks, ReLU), trained with a plain PyTorch loop
(Adam, 12 epochs) on the training split paretune uses for the glyph images (the
same 60/20/20 split per class, so validation and test images stay unseen).
`spec_weights.toml` then searches what can be done to it. Make the images first:
`python examples/own_model/make_images.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import build  # noqa: E402 - the example's model, beside this file

from search.core.spec import load  # noqa: E402
from search.tasks.data import load_task  # noqa: E402
from search.tasks.task import loader

KNOBS = {"width": 16, "blocks": 2, "act": "relu"}  # the same values as spec_weights.toml's [baseline]
EPOCHS = 12


def main(out: Path = HERE / "model.pt", epochs: int = EPOCHS) -> float:
    spec = load(HERE / "spec_weights.toml")
    task = load_task(spec)
    torch.manual_seed(0)
    model = build(KNOBS, task.input_shape, task.n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        for inputs, labels in loader(task.train, 64, shuffle=True, seed=epoch):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), labels).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader(task.val, 256))
    accuracy = correct / len(task.val)
    torch.save(model.state_dict(), out)
    print(f"wrote {out}: validation accuracy {accuracy:.4f} after {epochs} epochs")
    return accuracy


if __name__ == "__main__":
    main()
