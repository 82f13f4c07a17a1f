"""Exponential moving average of the weights (Polyak & Juditsky 1992), used for eval and sampling.

    python train.py cpu --ema=0.999    # eval, best.pt selection and samples use the EMA weights
Checkpoints carry the averaged weights under 'ema' (a plain state_dict) and the update count
under 'ema_updates'; inference.load_model prefers 'ema' when it is there.
"""
import copy

import torch


class EMA:
    def __init__(self, model, decay):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)  # its own uncompiled copy

    def rate(self):
        """The decay used for the next update: ramps up from 0.1 so the average forgets the random
        init quickly in short runs (TensorFlow's ExponentialMovingAverage num_updates rule)."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model):
        d = self.rate()
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - d)  # e += (1-d)(p-e)
        self.updates += 1

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, weights, updates):
        self.model.load_state_dict(weights)
        self.updates = updates
