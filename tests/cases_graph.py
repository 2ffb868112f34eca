"""Contract cases for the graph layers: merges (several inputs), split (several outputs), matmul,
reshape, transpose and upsample2d (see tests/layer_cases.py).

A multi-input case gives ``input_shape`` as a list of per-sample shapes, as ``build`` gets it.
"""

from __future__ import annotations

from hypothesis import strategies as st

from layer_cases import LayerCase

dims = st.integers(1, 3)
batches = st.integers(1, 3)


@st.composite
def broadcastable_shapes(draw, count=st.integers(2, 4)) -> list[tuple[int, ...]]:
    """Per-sample shapes that broadcast together: each a suffix of one full shape (so ranks
    differ) with some axes shrunk to 1."""
    full = draw(st.lists(dims, min_size=1, max_size=3))
    return [_shrunk_suffix(draw, full, min_rank=1) for _ in range(draw(count))]


def _shrunk_suffix(draw, full: list[int], min_rank: int) -> tuple[int, ...]:
    """A suffix of ``full`` with some axes shrunk to 1: it broadcasts against ``full``."""
    suffix = full[len(full) - draw(st.integers(min_rank, len(full))):]
    return tuple(1 if draw(st.booleans()) else n for n in suffix)


@st.composite
def elementwise_case(draw) -> LayerCase:
    return LayerCase({}, draw(broadcastable_shapes()), batch=draw(batches))


@st.composite
def _axis_option(draw, rank: int) -> tuple[dict, int]:
    """({'axis': a} or {} for the default 0, the axis): negative spellings drawn too."""
    axis = draw(st.integers(-rank, rank - 1))
    if axis == 0 and draw(st.booleans()):
        return {}, 0
    return {"axis": axis}, axis


@st.composite
def concat_case(draw) -> LayerCase:
    base = draw(st.lists(dims, min_size=1, max_size=3))
    options, axis = draw(_axis_option(len(base)))
    shapes = []
    for _ in range(draw(st.integers(2, 3))):
        shape = list(base)
        shape[axis] = draw(dims)
        shapes.append(tuple(shape))
    return LayerCase(options, shapes, batch=draw(batches))


@st.composite
def split_case(draw) -> LayerCase:
    shape = draw(st.lists(dims, min_size=1, max_size=3))
    options, axis = draw(_axis_option(len(shape)))
    sizes = draw(st.lists(dims, min_size=2, max_size=3))
    shape[axis] = sum(sizes)
    return LayerCase({"sizes": sizes, **options}, tuple(shape), batch=draw(batches))


@st.composite
def matmul_case(draw) -> LayerCase:
    """a (..., m, k) @ b (..., k, n) with leading axes that broadcast (possibly none)."""
    m, k, n = draw(dims), draw(dims), draw(dims)
    leading = draw(st.lists(dims, min_size=0, max_size=2))
    lead_a, lead_b = (_shrunk_suffix(draw, leading, min_rank=0) for _ in range(2))
    return LayerCase({}, [(*lead_a, m, k), (*lead_b, k, n)], batch=draw(batches))


def _grouped(draw, atoms: list[int]) -> list[int]:
    """``atoms`` multiplied together in consecutive groups: a shape with the same element count."""
    cuts = sorted(draw(st.sets(st.integers(1, len(atoms) - 1), max_size=len(atoms) - 1))
                  if len(atoms) > 1 else set())
    bounds = [0, *cuts, len(atoms)]
    shape = []
    for start, end in zip(bounds, bounds[1:]):
        size = 1
        for atom in atoms[start:end]:
            size *= atom
        shape.append(size)
    return shape


@st.composite
def reshape_case(draw) -> LayerCase:
    atoms = draw(st.lists(dims, min_size=1, max_size=4))
    target = _grouped(draw, atoms)
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return LayerCase({"shape": target}, tuple(_grouped(draw, atoms)), batch=draw(batches))


@st.composite
def transpose_case(draw) -> LayerCase:
    shape = draw(st.lists(dims, min_size=1, max_size=4))
    rank = len(shape)
    axes = [a - rank if draw(st.booleans()) else a
            for a in draw(st.permutations(range(rank)))]
    return LayerCase({"axes": axes}, tuple(shape), batch=draw(batches))


@st.composite
def upsample2d_case(draw) -> LayerCase:
    options = draw(st.one_of(st.just({}), st.builds(lambda f: {"factor": f}, st.integers(1, 3))))
    return LayerCase(options, (draw(dims), draw(dims), draw(dims)), batch=draw(batches))


LAYER_CASES = {
    "add": elementwise_case(),
    "multiply": elementwise_case(),
    "concat": concat_case(),
    "split": split_case(),
    "matmul": matmul_case(),
    "reshape": reshape_case(),
    "transpose": transpose_case(),
    "upsample2d": upsample2d_case(),
}
