"""A user training loop that follows the contract (search/trial/training.py)."""

CALLS = []  # (epochs, batches seen) per call, for tests in the same process


def fit(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks):
    batches = 0
    for epoch in range(epochs):
        model.train()
        for inputs, labels in train_loader:
            hooks.pause()
            inputs, labels = hooks.transform(inputs.to(hooks.device)), labels.to(hooks.device)
            logits = model(inputs)
            loss = hooks.loss(model, inputs, logits, labels)
            optimizer.zero_grad()
            loss.backward()
            hooks.after_backward(model)
            optimizer.step()
            scheduler.step()
            batches += 1
        hooks.end_epoch(epoch)
        report(epoch, hooks.accuracy(model, val_loader))
    CALLS.append((epochs, batches))


def fit_plain_loss(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks):
    """Ignores hooks.loss: label smoothing, distillation and L1 would be silently lost."""
    import torch.nn.functional as F

    for epoch in range(epochs):
        for inputs, labels in train_loader:
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        hooks.end_epoch(epoch)
