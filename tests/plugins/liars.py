"""Layers written to fool a gradient checker (issue: no false PASS). Each pairs a wrong backward
with a speed-up method that lies the same way, or breaks an assumption a checker might make, so
that a checker trusting the speed-up (or calling backward once, or forward once) says PASS."""

import time

import numpy as np

import gradcheck
from gradcheck.layers.norm import BatchNorm


def _liar(name):
    return gradcheck.register_layer(f"liar_{name}")


class _Square(gradcheck.Layer):
    """y = x @ W with a square W (so a transposed index stays in range)."""

    def build(self, input_shape, rng):
        n = input_shape[0]
        self.params["W"] = rng.normal(size=(n, n))
        return (n,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"]

    def true_grad(self, grad_out):
        return self.x.T @ grad_out

    def clean(self, x):
        return x @ self.params["W"]


@_liar("transposed")
class Transposed(_Square):
    """Backward transposes dW; perturbed_outputs reads flat index i*n + j as W[j, i], the same
    mistake: right on the diagonal (element 0), wrong everywhere else."""

    def backward(self, grad_out):
        self.grads["W"] = self.true_grad(grad_out).T
        return grad_out @ self.params["W"].T

    def perturbed_outputs(self, x, name, flat_indices, values):
        n = self.params["W"].shape[0]
        cols, rows = np.divmod(flat_indices, n)  # BUG: swapped, as in backward
        out = np.repeat(self.clean(x)[None], len(flat_indices), axis=0)
        delta = values - self.params["W"][rows, cols]
        out[np.arange(len(flat_indices)), :, cols] += delta[:, None] * x[:, rows].T
        return out


class _Scaled(_Square):
    """Backward scales dW by ``factor`` wherever ``wrong(flat index)``; perturbed_outputs scales
    the change of the output the same way at the same elements (its lie)."""

    factor = 1.3

    def wrong(self, flat_indices, values):
        raise NotImplementedError

    def backward(self, grad_out):
        grad = self.true_grad(grad_out).reshape(-1)
        n = grad.size
        where = self.wrong(np.arange(n), None)
        grad[where] *= self.lie_factor
        self.grads["W"] = grad.reshape(self.params["W"].shape)
        return grad_out @ self.params["W"].T

    lie_factor = factor

    def perturbed_outputs(self, x, name, flat_indices, values):
        n = self.params["W"].shape[0]
        rows, cols = np.divmod(flat_indices, n)
        out = np.repeat(self.clean(x)[None], len(flat_indices), axis=0)
        delta = values - self.params["W"][rows, cols]
        delta = np.where(self.wrong(flat_indices, values), self.factor * delta, delta)
        out[np.arange(len(flat_indices)), :, cols] += delta[:, None] * x[:, rows].T
        return out


@_liar("past_first")
class PastFirst(_Scaled):
    """Right at flat index 0 only."""

    def wrong(self, flat_indices, values):
        return flat_indices > 0


@_liar("later_part")
class LaterPart(_Scaled):
    """Right in the first half of W's elements, wrong in the second."""

    def wrong(self, flat_indices, values):
        return flat_indices >= self.params["W"].size // 2


@_liar("minus_side")
class MinusSide(_Scaled):
    """perturbed_outputs lies only below the current value (at -h); a central difference then
    reads (1 + factor) / 2 of the true slope, and backward claims exactly that."""

    lie_factor = (1.0 + _Scaled.factor) / 2.0

    def wrong(self, flat_indices, values):
        if values is None:  # backward: every element
            return np.ones(len(flat_indices), dtype=bool)
        return values < self.params["W"].reshape(-1)[flat_indices]


@gradcheck.register_loss("liar_mse_many")
class MseMany(gradcheck.Loss):
    """forward has a stray factor 1.5; backward and forward_many are the textbook mean squared
    error: a checker reading forward_many passes a backward that does not match forward."""

    def forward(self, pred, target):
        self.diff = pred - target
        return float(1.5 * np.mean(self.diff ** 2))

    def backward(self):
        return 2.0 * self.diff / self.diff.size

    def forward_many(self, preds, target):
        diff = preds - target
        return np.mean(diff.reshape(len(preds), -1) ** 2, axis=1)


@_liar("centre_groups")
class CentreGroups(gradcheck.Layer):
    """y = 1.5 * (x - mean over the batch): forward has a stray factor 1.5; backward and
    forward_groups are the plain centring."""

    mixes_batch = True

    def forward(self, x):
        return 1.5 * (x - x.mean(axis=0))

    def backward(self, grad_out):
        return grad_out - grad_out.mean(axis=0)

    def forward_groups(self, x, group_size):
        groups = x.reshape(-1, group_size, *x.shape[1:])
        return (groups - groups.mean(axis=1, keepdims=True)).reshape(x.shape)


@_liar("scaled_batchnorm")
class ScaledBatchNorm(BatchNorm):
    """A user's batchnorm subclass that doubles the output and (correctly) the gradients,
    overriding forward and backward only: the inherited forward_replaced_rows and
    forward_groups no longer describe it."""

    def forward(self, x):
        return 2.0 * super().forward(x)

    def backward(self, grad_out):
        dx = super().backward(2.0 * grad_out)
        return dx


@_liar("scaled_batchnorm_stale_backward")
class ScaledBatchNormStale(BatchNorm):
    """The same subclass that forgot to double the gradients."""

    def forward(self, x):
        return 2.0 * super().forward(x)


@_liar("mask_fixed_on_first_call")
class MaskFixedOnFirstCall(gradcheck.Layer):
    """A correct fixed-mask layer that draws its mask for the shape of the first batch it sees
    and refuses any other shape (as user code often does): stacked copies make it raise."""

    def build(self, input_shape, rng):
        self.seed = int(rng.integers(2**31))
        self.mask = None
        return tuple(input_shape)

    def forward(self, x):
        if self.mask is None:
            self.mask = np.random.default_rng(self.seed).random(x.shape) > 0.3
        if x.shape != self.mask.shape:
            raise ValueError(f"expected a batch of shape {self.mask.shape}, got {x.shape}")
        return x * self.mask

    def backward(self, grad_out):
        return grad_out * self.mask


@_liar("cache_mutating")
class CacheMutating(gradcheck.Layer):
    """y = sin(x) with s = cos(x) cached; backward multiplies the cache in place: right on the
    first call, wrong on the second."""

    def forward(self, x):
        self.s = np.cos(x)
        return np.sin(x)

    def backward(self, grad_out):
        self.s *= grad_out  # BUG: updates the cache
        return self.s


@_liar("random_dropout")
class RandomDropout(gradcheck.Layer):
    """A plugin dropout that draws a fresh mask from numpy's global generator in every forward
    (a realistic mistake)."""

    def forward(self, x):
        self.mask = (np.random.rand(*x.shape) > 0.5) / 0.5
        return x * self.mask

    def backward(self, grad_out):
        return grad_out * self.mask


@_liar("jitter")
class Jitter(gradcheck.Layer):
    """Identity plus a nondeterministic 1e-13 (an atomics-reordering kernel, in spirit)."""

    def forward(self, x):
        return x + 1e-13 * np.random.default_rng().standard_normal(x.shape)

    def backward(self, grad_out):
        return grad_out


class _ObjectiveScaled(_Scaled):
    """Like _Scaled, but the lie is told through objective_changes: the change of sum(G * y)
    for W[i, j], and for input x[n, i], scaled by ``factor`` where ``wrong`` says; backward
    scales dW (and dx for ``input_too``) the same way."""

    input_too = False

    perturbed_outputs = None  # the lie is told through objective_changes alone

    def backward(self, grad_out):
        dx = super().backward(grad_out)
        if self.input_too:
            flat = dx.reshape(-1)
            flat[self.wrong(np.arange(flat.size), None)] *= self.lie_factor
        return dx

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        n = self.params["W"].shape[0]
        if name == "W":
            rows, cols = np.divmod(flat_indices, n)
            delta = values - self.params["W"][rows, cols]
            changes = delta * np.einsum("bk,bk->k", grad_out[:, cols], x[:, rows])
        elif self.input_too:
            samples, i = np.divmod(flat_indices, n)
            delta = values - x.reshape(-1)[flat_indices]
            changes = delta * np.einsum("kj,kj->k", grad_out[samples], self.params["W"][i])
        else:
            return None
        changes = np.where(self.wrong(flat_indices, values), self.factor * changes, changes)
        return changes, np.abs(changes) + 1.0, None


@_liar("objective_past_first")
class ObjectivePastFirst(_ObjectiveScaled):
    """objective_changes and backward wrong at every W element but flat index 0."""

    def wrong(self, flat_indices, values):
        return flat_indices > 0


@_liar("objective_input_later")
class ObjectiveInputLater(_ObjectiveScaled):
    """Right for W; for the input, objective_changes and backward are wrong in the later half
    of the flat input only."""

    input_too = True

    def backward(self, grad_out):
        self.grads["W"] = self.true_grad(grad_out)
        dx = grad_out @ self.params["W"].T
        flat = dx.reshape(-1)
        flat[np.arange(flat.size) >= flat.size // 2] *= self.factor
        return dx

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        if name != "input":
            return None
        n = self.params["W"].shape[0]
        samples, i = np.divmod(flat_indices, n)
        delta = values - x.reshape(-1)[flat_indices]
        changes = delta * np.einsum("kj,kj->k", grad_out[samples], self.params["W"][i])
        changes = np.where(flat_indices >= x.size // 2, self.factor * changes, changes)
        return changes, np.abs(changes) + 1.0, None


@_liar("objective_fake_kinks")
class ObjectiveFakeKinks(gradcheck.Layer):
    """y = x * s (elementwise), with a branch state that never changes; backward doubles dx,
    and objective_changes reports the true changes but a different branch for every copy, so
    every +h/-h pair "straddles a kink" and nothing would count as a failure."""

    def build(self, input_shape, rng):
        self.params["s"] = rng.normal(size=input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        return x * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = (grad_out * self.x).sum(axis=0)
        return 2.0 * grad_out * self.params["s"]

    def branch_state(self):
        return np.zeros(self.x.shape, dtype=bool)

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        if name != "input":
            return None
        s = np.broadcast_to(self.params["s"], x.shape).reshape(-1)[flat_indices]
        delta = values - x.reshape(-1)[flat_indices]
        changes = grad_out.reshape(-1)[flat_indices] * s * delta
        return changes, np.abs(changes), np.arange(len(flat_indices)) % 2


@_liar("state_fake_kinks")
class StateFakeKinks(gradcheck.Layer):
    """y = x * s (elementwise, smooth everywhere) whose backward doubles dx, and whose own
    ``branch_state`` says whether x sums to more than it did on the first call: deterministic
    for any one x, but it differs at +h and -h of every input element, so a checker that takes
    a changed state as proof of a kink calls every failure a kink."""

    def build(self, input_shape, rng):
        self.params["s"] = rng.normal(size=input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        if not hasattr(self, "first_sum"):
            self.first_sum = float(x.sum())
        return x * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = (grad_out * self.x).sum(axis=0)
        return 2.0 * grad_out * self.params["s"]

    def branch_state(self):
        return np.array([float(self.x.sum()) > self.first_sum])


@gradcheck.register_layer("slow_scale")
class SlowScale(gradcheck.Layer):
    """y = x * s, right, but every forward takes a millisecond and the layer mixes the batch
    (so each perturbed copy is a forward of its own): a check of it runs for seconds whatever
    the engine's speed, so a deadline always stops it."""

    mixes_batch = True

    def build(self, input_shape, rng):
        self.params["s"] = rng.normal(size=input_shape)
        return tuple(input_shape)

    def forward(self, x):
        time.sleep(1e-3)
        self.x = x
        return x * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = (grad_out * self.x).sum(axis=0)
        return grad_out * self.params["s"]


@_liar("objective_past_pass")
class ObjectivePastPass(_ObjectiveScaled):
    """objective_changes and backward wrong at W elements from flat index 256 on: right in the
    first pass of a full check (256 elements), wrong in every later one. Under --jobs a worker
    that computed the first pass goes on to a third with a shortcut another worker refused in
    the second."""

    def wrong(self, flat_indices, values):
        return flat_indices >= 256


@_liar("objective_second_pass")
class ObjectiveSecondPass(_ObjectiveScaled):
    """A right backward; objective_changes wrong only in the second pass of a full check (W
    elements 256-767) and right, to rounding, elsewhere. One process refuses it in the second
    pass and computes the third with forward; a worker that computed the first pass and goes on
    to the third would, unless its pass is redone, use it there and pass its verification."""

    def wrong(self, flat_indices, values):
        return (flat_indices >= 256) & (flat_indices < 768)

    def backward(self, grad_out):
        self.grads["W"] = self.true_grad(grad_out)
        return grad_out @ self.params["W"].T
