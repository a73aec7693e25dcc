"""Write the walkthrough notebooks from the cell sources below (run: ``python notebooks/build_notebooks.py``).

Keeping the sources here makes them diffable and reviewable; the ``.ipynb`` files are regenerated outputs.
``JAXAPEX_NOTEBOOK_TINY=1`` in the environment makes both notebooks use tiny settings (the test suite runs
them that way).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

CRYPTOGRAPHER = [
    (
        "md",
        """# jaxapex for cryptographers: what one chunk proof says

This notebook opens one OBS *chunk circuit* — the unit every proof is made of — and shows its columns,
its gates as polynomials, a slice of the witness table, the layout, the soundness audit, and finally a
real Halo2 proof (midnight-proofs, KZG over BLS12-381) with its verification and the rejection of a
tampered one. The statement is documented in `docs/circuit.md` and `docs/threat-model.md`.""",
    ),
    (
        "code",
        """import os, warnings, tempfile
from pathlib import Path
import numpy as np
TINY = os.environ.get("JAXAPEX_NOTEBOOK_TINY") == "1"
from circuit_compiler.demo import obs_circuit
from circuit_compiler import inspect as ccinspect
from circuit_compiler.audit import audit
from circuit_compiler.layout_plot import plot_layout
demo = obs_circuit(level="F", blocks=2 if TINY else 4, block_size=8 if TINY else 16, lanes=4, seed=1)
cs, assignment, p = demo.cs, demo.assignment, demo.modulus
print(ccinspect.format_summary(ccinspect.statistics(cs, p)))""",
    ),
    (
        "md",
        """## The gates

Every gate is `selector · polynomial = 0` on every row. Names say which relation of the statement it
enforces: removal (`θ'_q = 0` on the mask), update (`θ' = θ + Δ` elsewhere), the solve residual and the
floor rescale of the OBS correction, the MAC rows computing `G·ỹ`, and the limb decompositions of the
range checks (each limb looked up in a `[0, 2^t)` table).""",
    ),
    ("code", "print(ccinspect.format_constraints(cs))"),
    ("md", "## A slice of the table (first rows of the first block; values shown signed, `p - x` as `-x`)"),
    ("code", "print(ccinspect.rows_table(cs, assignment, p, start=0, count=12))"),
    ("md", "## The layout (rows × columns, colored by the selector that is on)"),
    (
        "code",
        """from IPython.display import Image, display
png = Path(tempfile.mkdtemp()) / "layout.png"
plot_layout(cs, png, assignment=assignment, modulus=p)
display(Image(filename=str(png)))""",
    ),
    (
        "md",
        """## Soundness audit

Every assigned advice cell must be touched by an enabled constraint, and changing any one of them (or a
small coordinated set) must break a constraint. A detection rate of 1.0 is the expectation.""",
    ),
    (
        "code",
        """report = audit(cs, assignment, p, mutations=64 if TINY else 256, compensated=32 if TINY else 128, seed=0)
print(report.summary())
assert report.ok""",
    ),
    (
        "md",
        """## A real proof

Keys depend only on the chunk *shape*; the mask is a public instance column; θ, θ' and the G lanes are
committed instance columns, each hiding its values behind one random salt cell.""",
    ),
    (
        "code",
        """from circuit_compiler import backend
from circuit_compiler.srs import Srs, InsecureSrsWarning
with warnings.catch_warnings():
    warnings.simplefilter("ignore", InsecureSrsWarning)
    srs = Srs.generate_dev(cs.k, Path(tempfile.mkdtemp()) / "srs.bin", seed=3)
keys = backend.keygen(srs, cs)
proof = backend.prove(srs, keys, cs, assignment)
commitments = {name: backend.commit(srs, cs.k, values) for name, values in assignment.committed.items()}
print(f"k = {cs.k}, proof {len(proof)} bytes, verifying key {len(keys.vk)} bytes")
print("verified:", backend.verify(srs, keys.vk, cs, proof, assignment.instance, commitments))""",
    ),
    ("md", "Flip one bit of the mask the verifier supplies, or present another commitment: rejected."),
    (
        "code",
        """other_mask = {k: v.copy() for k, v in assignment.instance.items()}
row = int(np.flatnonzero(other_mask["mask"] == 0)[0])
other_mask["mask"][row] = 1
print("another mask:", backend.verify(srs, keys.vk, cs, proof, other_mask, commitments))
swapped = dict(commitments, theta=commitments["theta_new"], theta_new=commitments["theta"])
print("swapped commitments:", backend.verify(srs, keys.vk, cs, proof, assignment.instance, swapped))
assert not backend.verify(srs, keys.vk, cs, proof, other_mask, commitments)""",
    ),
]

RESEARCHER = [
    (
        "md",
        """# jaxapex for ML researchers: the unlearning pipeline

The real-data vision task (`jaxapex.tasks.run_characters_task`; benchmarks/TABLES.md describes it): a
global ViT trained on MNIST digits + printed capitals (29 classes) → a client personalizes it on
handwriting-font renderings of its 28 classes (a real printed → handwriting style shift) → the provider
scores fc1 weights on forget (the digit 3) and retain data and publishes a sparse mask → the client removes
the masked weights and repairs the damage with a Group-OBS update from its blockwise empirical Fisher.

The data come from offline packages (`jaxapex data status` lists them and how to install them); trained
models are cached under `runs/cache/characters`, so a second run reads them back instead of training
(the first one trains for a few minutes). `jaxapex demo --task characters` runs the same step as the
client does under the protocol: quantized, committed, proven and verified. Licences: MNIST CC BY-SA 3.0;
the fonts their own free licences.""",
    ),
    (
        "code",
        """import os, json, tempfile
import numpy as np
TINY = os.environ.get("JAXAPEX_NOTEBOOK_TINY") == "1"
from jaxapex import tasks
if TINY:  # a smoke-test run: the recipe's smoke configuration, cached in a scratch directory
    run = tasks.run_characters_task(config=tasks.characters_smoke_config(), cache_dir=tempfile.mkdtemp())
else:  # the recipe with its quick global training (1,000 steps); models cached in runs/cache/characters
    run = tasks.run_characters_task(quick=True, seed=0, log=print)
summary = run.summary()
settings = run.settings
print(f"forget class {settings['forget_class']}; client classes {settings['personal_classes']}")
print(f"evaluation: {settings['n_eval']['forget']} forget test images, {settings['n_eval']['personal']} personal test images")
print(f"mask: {summary['masked_weight_fraction']:.2%} of the fc1 weights, B = {summary['block_size']}")
for row in ("personalized", "masked", "obs"):
    r = summary["rows"][row]
    print(f"{row:<13} forget {r['forget_acc']:.3f}  personal {r['personal_acc']:.3f}  test {r['test_acc']:.3f}")
print("recovery of personal accuracy:", summary["recovery"])""",
    ),
    ("md", "## The table as a plot"),
    (
        "code",
        """import matplotlib.pyplot as plt
rows = ["personalized", "masked", "obs"]
metrics = ["forget_acc", "personal_acc", "test_acc"]
fig, ax = plt.subplots(figsize=(6, 3))
for i, row in enumerate(rows):
    ax.bar(np.arange(3) + (i - 1) * 0.27, [summary["rows"][row][m] for m in metrics], 0.27, label=row)
ax.set_xticks(range(3), ["forget (digit 3)", "personal (handwriting)", "global test"]); ax.set_ylim(0, 1)
ax.legend(fontsize=8)
plt.show()""",
    ),
    (
        "md",
        """## Where the OBS update goes

The update is confined to blocks that contain masked weights; inside them it moves the surviving weights
along the client's curvature. A block is B consecutive weights of the row-major fc1 matrix W (out, in): at
the recipe's B = 64 one block is one neuron's incoming row.""",
    ),
    (
        "code",
        """from jaxapex.layers import get_matrix, path_name
for p in run.target_paths:
    W0 = np.asarray(get_matrix(run.params_masked, p)); W1 = np.asarray(get_matrix(run.params_obs, p))
    mask = run.masks[p]
    print(f"{path_name(p)}: {mask.sum()} masked, |Δ| max {np.abs(W1 - W0).max():.4f}, "
          f"moved {(np.abs(W1 - W0) > 0).sum()} weights")""",
    ),
    (
        "md",
        """## The block-size trade-off

Larger blocks capture more curvature (better recovery) but cost about B + 16 proof cells per weight at
level F. `python -m benchmarks.block_size --json PATH` measures the curve on the characters and code tasks;
the measured study is kept in `benchmarks/results/block_size_characters.json` and shown here.""",
    ),
    (
        "code",
        """from pathlib import Path
path = Path("benchmarks/results/block_size_characters.json")
if path.exists():
    study = json.loads(path.read_text())
    names = study["settings"]["tasks"]
    print("B     " + "".join(f"{name + ' rec':>16}" for name in names) + "   cells/weight")
    for row in study["rows"]:
        recoveries = "".join(
            f"{'skipped':>16}" if row[f"{name}_skipped"] else f"{row[f'{name}_recovery']:>16.2f}" for name in names
        )
        print(f"{row['block_size']:<6}{recoveries}   {row['cells_per_weight']:>8.1f}")
    print("recommended B:", study["recommended_block_size"])
else:
    print("run `python -m benchmarks.block_size --json benchmarks/results/block_size_characters.json` to fill this cell")""",
    ),
]


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main() -> None:
    for name, cells in (("cryptographer", CRYPTOGRAPHER), ("researcher", RESEARCHER)):
        nbformat.write(build(cells), HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
