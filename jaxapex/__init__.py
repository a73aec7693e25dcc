"""jaxapex: verifiable personalized machine unlearning (Group OBS in JAX, proven with Halo2).

The public API is re-exported here (``jaxapex.group_obs``, ``jaxapex.blockwise_fisher_inverse``, ...),
optax style; the modules behind it (``jaxapex.obs``, ``jaxapex.fisher``, ...) stay importable, but what
is not listed in ``__all__`` is internal and may change. The protocol's roles live in
``jaxapex.protocol`` (``client``, ``provider``); its data types are re-exported here.
"""

from circuit_compiler._exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # models, checkpoints, importers
    "ViTConfig": "models",
    "OPTConfig": "models",
    "build_model": "models",
    "init_params": "models",
    "mlp_target_paths": "models",
    "batch_loss_fn": "models",
    "example_loss_fn": "models",
    "per_example_losses_fn": "models",
    "count_params": "models",
    "save_checkpoint": "checkpoints",
    "load_checkpoint": "checkpoints",
    "CheckpointError": "checkpoints",
    "import_vit_hf": "importers",
    "import_opt_hf": "importers",
    "CheckpointMismatchError": "importers",
    # training and personalization
    "TrainConfig": "train",
    "PersonalizeConfig": "train",
    "fit": "train",
    "personalize": "train",
    # the provider's mask
    "GradientMoments": "masking",
    "gradient_moments": "masking",
    "second_order_scores": "masking",
    "activation_ratio_scores": "masking",
    "top_fraction_mask": "masking",
    "neuron_mask": "masking",
    # the client's Fisher and Group OBS
    "FisherGroup": "fisher",
    "InverseGroup": "fisher",
    "blockwise_fisher": "fisher",
    "blockwise_fisher_inverse": "fisher",
    "invert_blocks": "fisher",
    "group_obs": "obs",
    "group_obs_lowrank": "obs",
    "obs_update": "obs",
    "unlearn": "obs",
    "unlearn_from_statistics": "precomputed",
    "fisher_from_gradients": "precomputed",
    "get_matrix": "layers",
    "set_matrix": "layers",
    "to_blocks": "layers",
    "from_blocks": "layers",
    # evaluation
    "accuracy": "evaluate",
    "lm_metrics": "evaluate",
    "recovery": "evaluate",
    "mia_auc": "evaluate",
    "membership_inference_auc": "evaluate",
    # the protocol's data types (its roles: jaxapex.protocol.client / .provider)
    "ProofConfig": "protocol.config",
    "LayerShape": "protocol.config",
    "UnlearningRequest": "protocol.requests",
    "Registry": "protocol.registry",
    "ClientState": "protocol.client",
    "VerificationFailed": "protocol.provider",
    "VerificationReport": "protocol.provider",
    "ArtifactError": "protocol.artifacts",
    # subpackages
    "protocol": "",
    "data": "",
    "baselines": "",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
