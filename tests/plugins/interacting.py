"""Two layers that are each right on their own and wrong together: ``pair_announce`` passes its
input through unchanged and publishes a summary of it, ``pair_listen`` scales its input by that
summary. Each backward is right for its own forward with the summary held fixed, so each passes
alone; through the network the summary moves with the input and no backward accounts for it.
The failure belongs to no single layer (``unlocalised``), and the smallest span that fails is
the pair."""

import numpy as np

import gradcheck

# The hidden channel between the two: what the announcing layer saw last.
_CHANNEL = {"gain": 1.0}


@gradcheck.register_layer("pair_announce")
class Announce(gradcheck.Layer):
    """y = x; publishes gain = 1 + mean(tanh(x)) for the listening layer."""

    def forward(self, x):
        _CHANNEL["gain"] = 1.0 + float(np.mean(np.tanh(x)))
        return x.copy()

    def backward(self, grad_out):
        return grad_out.copy()


@gradcheck.register_layer("pair_listen")
class Listen(gradcheck.Layer):
    """y = gain * x, with gain read from the channel at forward time (held fixed in backward)."""

    def forward(self, x):
        self.gain = _CHANNEL["gain"]
        return self.gain * x

    def backward(self, grad_out):
        return self.gain * grad_out
