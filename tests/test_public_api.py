"""The packages' public surface: exactly these names at the top level, each the object its module
defines; importing a package loads none of the heavy modules until a name is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import circuit_compiler
import jaxapex

JAXAPEX = """
ArtifactError CheckpointError CheckpointMismatchError ClientState FisherGroup GradientMoments InverseGroup
LayerShape OPTConfig PersonalizeConfig ProofConfig Registry TrainConfig UnlearningRequest VerificationFailed
VerificationReport ViTConfig accuracy activation_ratio_scores baselines batch_loss_fn blockwise_fisher
blockwise_fisher_inverse build_model count_params data example_loss_fn fisher_from_gradients fit from_blocks get_matrix
gradient_moments group_obs group_obs_lowrank import_opt_hf import_vit_hf init_params invert_blocks lm_metrics
load_checkpoint mia_auc membership_inference_auc mlp_target_paths neuron_mask obs_update per_example_losses_fn
personalize protocol recovery save_checkpoint second_order_scores set_matrix to_blocks top_fraction_mask unlearn
unlearn_from_statistics
""".split()

CIRCUIT_COMPILER = """
Assignment AuditReport BackendError BoundReport ChunkCircuit ChunkShape CircuitBuilder Column ColumnKind
ConstraintSystem ConstraintViolation Copy Failure FieldOverflowError FixedPointSpec Gate InsecureSrsWarning Keys
LayerWitness Lookup MockProver PrimeField ProveJob ProveResult ProvingError QuantizationError Srs
VerificationError WitnessError assert_satisfied bounds build_chunk_circuit check_bounds circuit_digest
commit delta_error_bound dequantize field_by_modulus field_by_name keygen load_circuit lower_chunk
map_on_workers obs_witness prove prove_many quantize quantized_obs_witness removal_witness save_circuit
spec_for_block_size verify
""".split()


@pytest.mark.parametrize(("package", "names"), [(jaxapex, JAXAPEX), (circuit_compiler, CIRCUIT_COMPILER)])
def test_public_names_are_pinned(package, names):
    # no export may be named like a submodule: importing the submodule would replace it on the package
    assert not {n for n, m in package._EXPORTS.items() if m} & {m.split(".")[0] for m in package._EXPORTS.values()}
    assert package.__all__ == sorted(names)
    assert dir(package) == sorted(names)


@pytest.mark.parametrize(("package", "names"), [(jaxapex, JAXAPEX), (circuit_compiler, CIRCUIT_COMPILER)])
def test_each_name_is_its_modules_object(package, names):
    for name in names:
        value = getattr(package, name)
        module = package._EXPORTS[name]
        if module == "":
            assert value.__name__ == f"{package.__name__}.{name}"
        else:
            home = sys.modules[f"{package.__name__}.{module}"]
            assert getattr(home, name) is value, name


def test_internals_stay_importable_but_unlisted():
    from jaxapex.fisher import pad_group
    from jaxapex.obs import padded_slots

    assert callable(pad_group) and callable(padded_slots)
    assert "pad_group" not in jaxapex.__all__ and "padded_slots" not in jaxapex.__all__
    with pytest.raises(AttributeError, match="has no attribute 'pad_group'"):
        jaxapex.pad_group  # noqa: B018


def test_importing_a_package_loads_nothing_heavy():
    code = (
        "import sys, jaxapex, circuit_compiler; "
        "print(sorted(m for m in ('jax', 'galois', 'circuit_compiler._halo2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
