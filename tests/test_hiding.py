"""Salt cells per committed column: derived from the circuit's rotations, unread, and enough to hide.

The rank test works with a known τ and random challenges: the linear map from a column's salt cells to
(its commitment, every evaluation one proof reveals) must have full rank, so those values are uniform
whatever the committed weights are.
"""

from __future__ import annotations

import random

import pytest

from circuit_compiler.fixedpoint import FixedPointSpec, ForgetSpec
from circuit_compiler.hiding import (
    committed_rotations,
    expand_salts,
    openings_per_proof,
    rank_mod_p,
    revealed_functionals,
    rows_read,
)
from circuit_compiler.lowering import ChunkShape, build_chunk_circuit

SHAPES = (
    [("R", B, None, None) for B in (4, 16, 64)]
    + [("F", B, B, None) for B in (4, 16, 64)]
    + [("F", 16, 4, "classic"), ("F", 8, 8, "forget")]
)


def shape_of(level, B, lanes, layout):
    forget = ForgetSpec(directions=2) if layout == "forget" else None
    return ChunkShape(
        blocks=2,
        block_size=B,
        level=level,
        spec=FixedPointSpec().for_block_size(B),
        lanes=lanes,
        layout=None if layout == "forget" else layout,
        forget=forget,
    )


@pytest.mark.parametrize("level, B, lanes, layout", SHAPES)
def test_every_committed_column_is_hidden_by_its_salts(level, B, lanes, layout):
    shape = shape_of(level, B, lanes, layout)
    cs = build_chunk_circuit(shape).cs
    p = shape.field.modulus
    rng = random.Random(f"{level}{B}{layout}")
    tau, x, x3 = (rng.randrange(1, p) for _ in range(3))
    rotations = committed_rotations(cs.gates, cs.lookups)
    opened = openings_per_proof(cs)
    assert set(opened) == set(shape.committed_names())
    for name in shape.committed_names():
        rows = list(shape.salt_rows(name))
        assert len(rows) == opened[name] + 1 == len(rotations[name]) + 2
        matrix = revealed_functionals(k=cs.k, modulus=p, salt_rows=rows, tau=tau, x=x, rotations=rotations[name], x3=x3)
        assert len(matrix) == len(rows)  # commitment + every opening
        assert rank_mod_p(matrix, p) == len(matrix), name
        assert not set(rows) & rows_read(cs, name), name


def test_one_salt_cell_does_not_hide_a_lane_opened_three_times():
    shape = shape_of("F", 16, 16, None)
    cs = build_chunk_circuit(shape).cs
    p = shape.field.modulus
    rotations = committed_rotations(cs.gates, cs.lookups)["g_8"]
    assert rotations == {0, -8}  # lane B/2: its two rotations and the opening point set
    matrix = revealed_functionals(
        k=cs.k, modulus=p, salt_rows=[shape.g_salt_row], tau=3**50, x=5**40, rotations=rotations, x3=11**30
    )
    assert rank_mod_p(matrix, p) == 1 < len(matrix)  # three independent leaks of the values


def test_rotations_follow_the_compact_layout():
    shape = shape_of("F", 4, 4, None)
    cs = build_chunk_circuit(shape).cs
    rotations = committed_rotations(cs.gates, cs.lookups)
    # cyclic lanes: g_1 is read forward (0), backward (-1) and backward across the block's start (B - 1);
    # g_2 = g_{B/2} as an upper diagonal (0, -2)
    assert rotations == {"theta": {0}, "theta_new": {0}, "g_0": {0}, "g_1": {0, -1, 3}, "g_2": {0, -2}}
    assert shape.salt_counts == {"theta": 3, "theta_new": 3, "g_0": 3, "g_1": 5, "g_2": 4}


def test_rank_mod_p_against_known_matrices():
    p = 101
    assert rank_mod_p([[1, 2], [2, 4]], p) == 1
    assert rank_mod_p([[1, 2], [3, 4]], p) == 2
    assert rank_mod_p([[1, 0, 0], [0, 0, 0], [0, 0, 5]], p) == 2
    assert rank_mod_p([[1, 1], [1, 102]], p) == 1  # 102 = 1 mod 101


def test_salt_seeds_expand_deterministically_and_per_column():
    p = shape_of("R", 4, None, None).field.modulus
    a = expand_salts(12345, "theta", 3, p)
    assert a == expand_salts(12345, "theta", 3, p) and len(set(a)) == 3 and all(0 <= v < p for v in a)
    assert a != expand_salts(12345, "g_0", 3, p) and a != expand_salts(12346, "theta", 3, p)
    assert a == expand_salts(12345, "theta_new", 3, p)  # θ' 's commitment is θ's at the next request
    assert expand_salts(a, "theta", 3, p) == a  # explicit cells pass through
    with pytest.raises(ValueError, match="needs 3 salt cells"):
        expand_salts(a[:2], "theta", 3, p)
    with pytest.raises(ValueError, match="canonical"):
        expand_salts([p, 0, 0], "theta", 3, p)
