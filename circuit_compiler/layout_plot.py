"""A PNG of a circuit's layout, in the spirit of halo2's ``CircuitLayout``.

Columns run left to right grouped by kind (instance, committed, advice | fixed, selector, table); rows run
top to bottom over the whole 2^k domain. Each row is coloured by its *region* -- the set of selectors on
in that row -- faintly across the row and strongly in the cells that are used (a nonzero value or read by
an enabled gate/lookup). Rows past ``rows`` are white and the blinding rows at the bottom are hatched red.
Large circuits are shown in row bins (a cell's strength is the fraction of used rows in its bin, the
bin's colour its most common region), so the picture stays readable at any size.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .ir import Assignment, Column, ColumnKind, ConstraintSystem, usable_rows
from .mock_prover import MockProver

KIND_ORDER = (
    ColumnKind.INSTANCE,
    ColumnKind.COMMITTED,
    ColumnKind.ADVICE,
    ColumnKind.FIXED,
    ColumnKind.SELECTOR,
    ColumnKind.TABLE,
)
_FIXED_SHADE = np.array([0.35, 0.35, 0.35])
_MAX_LEGEND = 12


def ordered_columns(cs: ConstraintSystem) -> list[Column]:
    return [c for kind in KIND_ORDER for c in cs.columns_of(kind)]


def region_ids(prover: MockProver) -> tuple[np.ndarray, list[str]]:
    """Per row of the 2^k domain, an id of the set of selectors on there (0: none), and each id's label."""
    selectors = prover.cs.columns_of(ColumnKind.SELECTOR)
    n = prover.n
    code = np.zeros(n, dtype=np.int64)
    rows = np.arange(n, dtype=np.int64)
    signature = np.zeros((n, max(1, len(selectors))), dtype=bool)
    for j, s in enumerate(selectors):
        signature[:, j] = prover.nonzero_cells(s, rows)
    unique, inverse = np.unique(signature, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    labels = []
    order = np.argsort([-(inverse == i).sum() for i in range(len(unique))])
    remap = np.empty(len(unique), dtype=np.int64)
    next_id = 1
    for i in order:
        if not unique[i].any():
            remap[i] = 0
            continue
        remap[i] = next_id
        next_id += 1
        labels.append(" + ".join(s.name for s, on in zip(selectors, unique[i]) if on))
    code[:] = remap[inverse]
    return code, ["(no selector)"] + labels


def used_cells(prover: MockProver, column: Column) -> np.ndarray:
    """Bool over the 2^k domain: the cell holds a nonzero value or an enabled constraint reads it."""
    n = prover.n
    used = np.zeros(n, dtype=bool)
    span = min(prover.assigned_span(column), n)
    used[:span] = prover.nonzero_cells(column)[:span]
    return used


def read_cells(prover: MockProver) -> dict[Column, np.ndarray]:
    """Per column, bool over the domain: read by an enabled gate or lookup, or named by a copy."""
    cs, n = prover.cs, prover.n
    read = {c: np.zeros(n, dtype=bool) for c in cs.columns}
    for rows, exprs in [(prover.enabled_rows(g.selector), [p for _, p in g.polys]) for g in cs.gates] + [
        (prover.lookup_rows(lk), list(lk.inputs)) for lk in cs.lookups
    ]:
        for q in frozenset().union(*(e.queries() for e in exprs)):
            read[q.column][(rows + q.rotation) % n] = True
    copies = np.asarray(cs.copies, dtype=np.int64).reshape(-1, 4)
    for ci, ri in ((0, 1), (2, 3)):
        for cid in np.unique(copies[:, ci]):
            rows = copies[copies[:, ci] == cid, ri]
            read[cs.columns[cid]][rows[(rows >= 0) & (rows < n)]] = True
    return read


def _layout_image(
    prover: MockProver,
    columns: list[Column],
    region: np.ndarray,
    colours: np.ndarray,
    read: dict[Column, np.ndarray],
    lo: int,
    hi: int,
    max_bins: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """RGB image (bins, columns, 3) of rows [lo, hi), each bin's region id, and the rows per bin."""
    bin_size = max(1, -(-(hi - lo) // max_bins))
    bins = -(-(hi - lo) // bin_size)
    pad = bins * bin_size - (hi - lo)

    def binned(flags: np.ndarray) -> np.ndarray:
        return np.pad(flags[lo:hi].astype(np.float64), (0, pad)).reshape(bins, bin_size).mean(axis=1)

    window = np.pad(region[lo:hi], (0, pad), constant_values=-1).reshape(bins, bin_size)
    region_of_bin = np.array([Counter(r[r >= 0].tolist()).most_common(1)[0][0] for r in window])
    background = colours[region_of_bin]
    background[region_of_bin == 0] = 1.0
    in_rows = binned(np.arange(prover.n) < prover.cs.rows)
    image = np.ones((bins, len(columns), 3))
    for j, column in enumerate(columns):
        strength = binned(used_cells(prover, column) | read[column])[:, None]
        if column.kind in (ColumnKind.FIXED, ColumnKind.SELECTOR, ColumnKind.TABLE):
            ink = np.broadcast_to(_FIXED_SHADE, (bins, 3))
        else:
            ink = colours[region_of_bin]
        faint = 1.0 - 0.22 * (1.0 - background) * in_rows[:, None]
        image[:, j, :] = faint * (1 - strength) + ink * strength
    return image, region_of_bin, bin_size


def _draw_panel(
    ax, cs: ConstraintSystem, columns: list[Column], image: np.ndarray, lo: int, hi: int, usable: int, *, labels: bool
) -> None:
    from matplotlib.patches import Rectangle

    ncol = len(columns)
    ax.imshow(image, aspect="auto", interpolation="nearest", extent=(-0.5, ncol - 0.5, hi, lo))
    if usable < hi:
        top = max(usable, lo)
        top = min(top, hi - 0.008 * (hi - lo))  # a few blinding rows among 2^k must stay visible
        ax.add_patch(
            Rectangle(
                (-0.5, top),
                ncol,
                hi - top,
                facecolor=(1, 0.8, 0.8),
                edgecolor="red",
                hatch="///",
                alpha=0.6,
                linewidth=0.8,
            )
        )
        if labels:
            ax.text(
                ncol - 0.5,
                usable,
                f" blinding rows from {usable}",
                va="bottom",
                ha="right",
                fontsize=8,
                color="darkred",
            )
    if lo < cs.rows < hi:
        ax.axhline(cs.rows, color="black", linewidth=0.8, linestyle="--")
        if labels:
            ax.text(ncol - 0.5, cs.rows, f" rows = {cs.rows}", va="bottom", ha="right", fontsize=8)
    start = 0
    for kind in KIND_ORDER:
        count = len(cs.columns_of(kind))
        if not count:
            continue
        if start:
            ax.axvline(start - 0.5, color="black", linewidth=1.2)
        if labels:
            ax.text(
                start + count / 2 - 0.5,
                lo - 0.01 * (hi - lo),
                kind.value if count > 1 else kind.value[:5],
                ha="center",
                va="bottom",
                fontsize=8,
                fontweight="bold",
            )
        start += count
    ax.set_ylim(hi, lo)
    if labels and ncol <= 90:
        ax.set_xticks(range(ncol))
        ax.set_xticklabels([c.name for c in columns], rotation=90, fontsize=7 if ncol > 30 else 8)
    else:
        ax.set_xticks([])


def active_rows(prover: MockProver) -> int:
    """One past the last row where any selector is on (at least 1): the part of the layout worth a zoom."""
    last = 0
    for s in prover.cs.columns_of(ColumnKind.SELECTOR):
        rows = prover.enabled_rows(s)
        if len(rows):
            last = max(last, int(rows[-1]) + 1)
    return max(last, 1)


def plot_layout(
    cs: ConstraintSystem,
    path: str | os.PathLike,
    *,
    assignment: Assignment | None,
    modulus: int,
    max_bins: int = 512,
    title: str | None = None,
) -> Path:
    """Write the layout PNG to ``path`` and return it. Without an assignment, witness cells count as
    used where a constraint reads them.

    When the gates only use a small top part of the domain (a big range table fills the rest), the main
    panel zooms on the rows where selectors are on and a narrow panel on the right shows the whole domain.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    empty = Assignment(advice={}, instance={}, committed={})
    prover = MockProver(cs, assignment if assignment is not None else empty, modulus)
    n = prover.n
    usable = usable_rows(cs.k, cs.max_advice_queries())
    columns = ordered_columns(cs)
    region, labels = region_ids(prover)
    read = read_cells(prover)
    palette = plt.get_cmap("tab20")
    colours = np.array([[0.85, 0.85, 0.85]] + [palette(i % 20)[:3] for i in range(len(labels) - 1)])

    zoom_to = min(n, int(active_rows(prover) * 1.1) + 2)
    zoom = zoom_to < n // 2
    width = min(26.0, max(9.0, 4.5 + 0.3 * len(columns)) * (1.3 if zoom else 1.0))
    if zoom:
        fig, (ax, ax_all) = plt.subplots(1, 2, figsize=(width, 9.0), gridspec_kw={"width_ratios": [4, 1]})
    else:
        fig, ax = plt.subplots(figsize=(width, 9.0))
    image, region_of_bin, bin_size = _layout_image(
        prover, columns, region, colours, read, 0, zoom_to if zoom else n, max_bins
    )
    _draw_panel(ax, cs, columns, image, 0, zoom_to if zoom else n, usable, labels=True)
    per_pixel = f"; {bin_size} rows per pixel row" if bin_size > 1 else ""
    ax.set_ylabel(f"row ({'rows 0..' + str(zoom_to - 1) + ' of ' if zoom else ''}2^k = {n}{per_pixel})")
    if zoom:
        whole, _, whole_bin = _layout_image(prover, columns, region, colours, read, 0, n, max_bins)
        _draw_panel(ax_all, cs, columns, whole, 0, n, usable, labels=False)
        ax_all.axhline(zoom_to, color="blue", linewidth=1.0)
        ax_all.set_title(f"whole domain\n(zoom above the blue line;\n{whole_bin} rows per pixel row)", fontsize=8)
        ax_all.yaxis.tick_right()
    stats = cs.statistics()
    fig.suptitle(
        title
        or (
            f"{cs.name}: k = {cs.k}, {cs.rows} rows, {len(columns)} columns, {stats['gates']} gates, "
            f"{stats['lookups']} lookups, {stats['copies']} copies"
        ),
        fontsize=10,
    )
    shown = [i for i in range(1, len(labels)) if (region_of_bin == i).any()][:_MAX_LEGEND]
    handles = [Patch(facecolor=colours[i], label=labels[i]) for i in shown]
    handles.append(Patch(facecolor=_FIXED_SHADE, label="fixed / selector / table value"))
    handles.append(Patch(facecolor=(1, 0.8, 0.8), edgecolor="red", hatch="///", label="blinding rows"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(4, len(handles)),
        fontsize=8,
        title="regions (selectors on); strong colour: cell used, faint: row of the region",
        title_fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
