"""Unlearning methods side by side, behind one interface: ``unlearn(run_or_inputs, *, config) -> (params, info)``.

=====================  =====================================================  =============================
name                   method                                                 reads
=====================  =====================================================  =============================
``zk_apex_obs``        provider mask + Group OBS from the client's Fisher     masks, personal
``naive_mask``         provider mask alone                                    masks
``retrain``            from scratch without the forget set (exact oracle)     global retain, personal
``gradient_ascent``    ascent on the forget set with a retain descent term    forget, personal (or retain)
``certified``          clipped noisy fine-tuning (Koloskova et al. 2025)      global retain, personal
``zs_pag``             proxy adversarial data + subspace projection (2025)    forget
=====================  =====================================================  =============================

:mod:`jaxapex.baselines.proof_cost` prices each method's ``info["work"]`` as rows of a proving circuit.
"""

from jaxapex.baselines import certified, gradient_ascent, naive_mask, proof_cost, retrain, zk_apex, zs_pag
from jaxapex.baselines.certified import CertifiedConfig
from jaxapex.baselines.common import (
    ArithmeticWork,
    ChunkCircuitWork,
    NoiseWork,
    StepWork,
    UnlearningInputs,
    as_inputs,
)
from jaxapex.baselines.gradient_ascent import GradientAscentConfig
from jaxapex.baselines.naive_mask import NaiveMaskConfig
from jaxapex.baselines.proof_cost import CostModel, ProofCost, cost_model_from_obs_circuit
from jaxapex.baselines.retrain import RetrainConfig
from jaxapex.baselines.zk_apex import ZkApexConfig
from jaxapex.baselines.zs_pag import ZsPagConfig

METHODS = {
    "zk_apex_obs": zk_apex.unlearn,
    "naive_mask": naive_mask.unlearn,
    "retrain": retrain.unlearn,
    "gradient_ascent": gradient_ascent.unlearn,
    "certified": certified.unlearn,
    "zs_pag": zs_pag.unlearn,
}

__all__ = [
    "METHODS",
    "ArithmeticWork",
    "CertifiedConfig",
    "ChunkCircuitWork",
    "CostModel",
    "GradientAscentConfig",
    "NaiveMaskConfig",
    "NoiseWork",
    "ProofCost",
    "RetrainConfig",
    "StepWork",
    "UnlearningInputs",
    "ZkApexConfig",
    "ZsPagConfig",
    "as_inputs",
    "certified",
    "cost_model_from_obs_circuit",
    "gradient_ascent",
    "naive_mask",
    "proof_cost",
    "retrain",
    "zk_apex",
    "zs_pag",
]
