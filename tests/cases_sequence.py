"""Contract cases for the sequence layers and the sequence loss (see layer_cases.py).

Token ids always repeat an id on purpose: an embedding backward that keeps one gradient per
distinct id (``dW[ids] += g``) passes every check whose random ids happen to be distinct.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from layer_cases import LayerCase, LossCase


def ids_with_a_repeat(vocab: int):
    """make_input drawing ids in [0, vocab) whose last position repeats the first one's id."""

    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        ids = rng.integers(0, vocab, shape)
        ids.reshape(-1)[-1] = ids.reshape(-1)[0]
        return ids

    return draw


@st.composite
def embedding_case(draw) -> LayerCase:
    vocab = draw(st.integers(1, 6))
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
    # batch >= 2: the repeated id then sits at two different positions whatever the shape.
    return LayerCase({"vocab": vocab, "dim": draw(st.integers(1, 4))}, shape,
                     batch=draw(st.integers(2, 3)), make_input=ids_with_a_repeat(vocab))


@st.composite
def recurrent_case(draw) -> LayerCase:
    options = {"units": draw(st.integers(1, 4)), "return_sequences": draw(st.booleans()),
               "learn_initial_state": draw(st.booleans())}
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 3)))
    return LayerCase(options, shape, batch=draw(st.integers(1, 3)))


@st.composite
def attention_case(draw) -> LayerCase:
    heads = draw(st.integers(1, 3))
    options = {"heads": heads, "causal": draw(st.booleans())}
    shape = (draw(st.integers(1, 4)), heads * draw(st.integers(1, 2)))
    return LayerCase(options, shape, batch=draw(st.integers(1, 3)))


@st.composite
def positional_encoding_case(draw) -> LayerCase:
    return LayerCase({}, (draw(st.integers(1, 5)), draw(st.integers(1, 5))),
                     batch=draw(st.integers(1, 3)))


@st.composite
def sequence_cross_entropy_case(draw) -> LossCase:
    # ignore_index outside the drawn labels: the contract test never ignores every token.
    # Ignored tokens are tested in test_sequence_loss.py.
    options = {"ignore_index": draw(st.sampled_from([None, -100]))}
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 5)))
    return LossCase(options, shape, batch=draw(st.integers(1, 3)))


LAYER_CASES = {
    "embedding": embedding_case(),
    "rnn": recurrent_case(),
    "lstm": recurrent_case(),
    "gru": recurrent_case(),
    "attention": attention_case(),
    "positional_encoding": positional_encoding_case(),
}

LOSS_CASES = {"sequence_cross_entropy": sequence_cross_entropy_case()}
