"""Exact unlearning by retraining: the oracle every approximate method is measured against.

The personalized model is rebuilt from scratch without the forget set, with the *same recipe* that built it:
fresh initialization → global training on the global data minus the forget set → the client's
personalization on its own data. The forget set is only read to keep it out: every training example that
is byte-identical to a forget example is dropped before training (and counted in ``info``; real corpora
repeat content across files), so no forget example is ever trained on.

Its proof would have to show every training step (forward, backward and optimizer update on every batch),
which :mod:`jaxapex.baselines.proof_cost` prices from the recorded work.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxapex.baselines.common import (
    StepWork,
    Stopwatch,
    UnlearningInputs,
    as_inputs,
    check_disjoint,
    config_dict,
    without_examples_of,
)
from jaxapex.models import init_params
from jaxapex.train import PersonalizeConfig, TrainConfig, dataset_size, fit, personalize


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    """The recipe of the original model: ``global_train`` (from a fresh init with ``init_seed``), then
    ``personalize``. Pass the recipe that produced ``inputs.params`` so the oracle is the same pipeline."""

    global_train: TrainConfig
    personalize: PersonalizeConfig
    init_seed: int = 0


def unlearn(run_or_inputs: Any, *, config: RetrainConfig) -> tuple[Any, dict]:
    """Retrain from scratch on ``global_retain``, then personalize on ``personal``.

    ``info``: ``global_loss`` and ``personal_loss`` (final training losses), ``dropped_forget_duplicates``
    (training examples identical to a forget example, left out) and the training work.
    """
    inputs: UnlearningInputs = as_inputs(run_or_inputs)
    inputs.require("global_retain", "personal", method="retrain")
    global_data, global_dropped = without_examples_of(inputs.global_retain, inputs.forget)
    personal_data, personal_dropped = without_examples_of(inputs.personal, inputs.forget)
    check_disjoint(global_data, inputs.forget, name="global retain")
    check_disjoint(personal_data, inputs.forget, name="personal")
    with Stopwatch() as sw:
        params = init_params(inputs.model, config.init_seed)
        params, global_history = fit(inputs.batch_loss, params, global_data, config.global_train)
        params, personal_history = personalize(inputs.personal_loss, params, personal_data, config.personalize)
        Stopwatch.ready(params)
    global_batch = min(config.global_train.batch_size, dataset_size(global_data))
    personal_batch = min(config.personalize.train.batch_size, dataset_size(personal_data))
    info = {
        "method": "retrain",
        "wall_s": sw.seconds,
        "config": config_dict(config),
        "global_loss": global_history.final_loss,
        "personal_loss": personal_history.final_loss,
        "dropped_forget_duplicates": {"global_retain": global_dropped, "personal": personal_dropped},
        "work": (
            StepWork("global_train", "train", config.global_train.steps, global_batch, "adam"),
            StepWork("personalize", "train", config.personalize.train.steps, personal_batch, "adam"),
        ),
    }
    return params, info
