"""A user dimension through the same protocol as the built-in ones: gradient clipping."""

import torch

from spaces import Dimension, FloatRange, Strict, suggest_range

NORMS = []  # gradient norms after clipping, for tests in the same process


class GradClipSpace(Strict):
    max_norm: FloatRange = FloatRange(low=0.01, high=1.0, log=True)


class GradClip(Dimension):
    name = "grad_clip"
    config = GradClipSpace

    def suggest(self, trial, config, ctx):
        return {"clip_norm": suggest_range(trial, "clip_norm", config.max_norm)}

    def prepare(self, model, params, ctx):
        norm = params["clip_norm"]

        def clip(module):
            torch.nn.utils.clip_grad_norm_(module.parameters(), norm)
            grads = [p.grad.norm() for p in module.parameters() if p.grad is not None]
            NORMS.append((norm, float(torch.norm(torch.stack(grads)))))

        ctx.training.backward_hooks.append(clip)

    def describe(self, params, config):
        return f"clip {params['clip_norm']:.2g}"


class Nameless(Dimension):
    config = GradClipSpace
