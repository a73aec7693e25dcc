"""circuit_compiler: a pure-Python PLONKish compiler for the quantized blockwise OBS update.

The public API is re-exported here, optax style (``circuit_compiler.FixedPointSpec``,
``circuit_compiler.MockProver``, ``circuit_compiler.keygen`` ...); the modules behind it stay importable,
but what is not listed in ``__all__`` is internal. Names are loaded on first use, so importing the package
needs neither galois nor the compiled Halo2 extension.
"""

from circuit_compiler._exports import lazy_exports

_EXPORTS = {
    # fields and fixed point
    "PrimeField": "field",
    "field_by_name": "field",
    "field_by_modulus": "field",
    "FixedPointSpec": "fixedpoint",
    "QuantizationError": "fixedpoint",
    "FieldOverflowError": "fixedpoint",
    "quantize": "fixedpoint",
    "dequantize": "fixedpoint",
    "bounds": "fixedpoint",
    "check_bounds": "fixedpoint",
    "delta_error_bound": "fixedpoint",
    "BoundReport": "fixedpoint",
    "spec_for_block_size": "fixedpoint",
    # the IR and building circuits
    "ConstraintSystem": "ir",
    "Assignment": "ir",
    "Column": "ir",
    "ColumnKind": "ir",
    "Gate": "ir",
    "Lookup": "ir",
    "Copy": "ir",
    "CircuitBuilder": "builder",
    # the OBS update: witness and lowering
    "LayerWitness": "witness",
    "WitnessError": "witness",
    "obs_witness": "witness",
    "quantized_obs_witness": "witness",
    "removal_witness": "witness",
    "ChunkShape": "lowering",
    "ChunkCircuit": "lowering",
    "build_chunk_circuit": "lowering",
    "lower_chunk": "lowering",
    # checking: mock prover and audit
    "MockProver": "mock_prover",
    "ConstraintViolation": "mock_prover",
    "Failure": "mock_prover",
    "assert_satisfied": "mock_prover",
    "AuditReport": "audit",  # the audit itself: circuit_compiler.audit.audit
    "save_circuit": "serialize",
    "load_circuit": "serialize",
    # the Halo2 backend
    "Srs": "srs",
    "InsecureSrsWarning": "srs",
    "Keys": "backend",
    "keygen": "backend",
    "prove": "backend",
    "verify": "backend",
    "commit": "backend",
    "circuit_digest": "backend",
    "BackendError": "backend",
    "VerificationError": "backend",
    "ProveJob": "executors",
    "ProveResult": "executors",
    "ProvingError": "executors",
    "prove_many": "executors",
    "map_on_workers": "executors",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
