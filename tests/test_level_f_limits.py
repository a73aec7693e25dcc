"""What level F guarantees against a client that chose G before the mask, as outcomes (docs/threat-model.md).

* Attack A: an in-range, symmetric, not positive-definite G (diagonal 1, off-diagonal 4096 = 2^f_g at
  scale 2^f_g) registers. Under a bound loose enough for the repair it programs, the honest bundle and one
  with every residual pushed to e = τ − 1 are both accepted; their θ' differ by at most the documented
  tolerance (:func:`~circuit_compiler.fixedpoint.delta_error_bound`: each Δ is within
  2^-f_w (1 + ½ ‖Ĝ_iS Ĝ_SS⁻¹‖₁) of the float OBS update, so two accepted ones within twice that).
* The programmed repair (|Δ| ≈ 4096·|θ_q| weight units) is capped by the request's bound b_Δ: under the
  protocol's default the client has no witness, and a bundle proven under a looser bound is rejected.
* Attack B (field-sized G entries) is rejected at registration:
  ``tests/test_protocol.py::test_registration_with_an_out_of_range_g_is_rejected`` and
  ``tests/test_wellformed.py``.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

backend = pytest.importorskip("circuit_compiler.backend")

from circuit_compiler.fixedpoint import (  # noqa: E402
    PROTOCOL_MAX_DELTA,
    QuantizationError,
    delta_error_bound,
    dequantize,
    spec_for_block_size,
)
from circuit_compiler.srs import Srs  # noqa: E402
from circuit_compiler.witness import WitnessError  # noqa: E402
from jaxapex.protocol import client, provider  # noqa: E402
from jaxapex.protocol.config import LayerShape, ProofConfig  # noqa: E402
from jaxapex.protocol.registry import Registry  # noqa: E402
from jaxapex.protocol.requests import UnlearningRequest  # noqa: E402

pytestmark = pytest.mark.prover

LAYER = "params/mlp/fc1/kernel"
OUT, IN, B = 8, 8, 8
LOOSE = 2.0**12  # weight units: b_Δ = f_w + 13 = 29 bits, room for attack A's programmed repair


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Srs.generate_dev(13, tmp_path_factory.mktemp("srs") / "srs.bin", seed=7)


@pytest.fixture(scope="module")
def attack_a(srs, tmp_path_factory):
    """A client registered with attack A's G (every block: diagonal 1, off-diagonal 2^f_g after
    quantization), and a request masking one weight in each of two blocks."""
    root = tmp_path_factory.mktemp("attack_a")
    rng = np.random.default_rng(4)
    params = {"params": {"mlp": {"fc1": {"kernel": rng.normal(size=(IN, OUT)) * 0.02}}}}
    config = ProofConfig(
        layers=(LayerShape(LAYER, OUT, IN),),
        level="F",
        block_size=B,
        lanes=B,
        blocks_per_chunk=4,
        spec=spec_for_block_size(B),
    )
    G = np.where(np.eye(B, dtype=bool), 1.0 / 4096, 1.0)[None].repeat(OUT * IN // B, 0)  # symmetric, not PD
    state0, registration = client.commit(
        client_id="mallory",
        params=params,
        config=config,
        srs=srs,
        inverse_fisher={LAYER: G},
        rng=rng,
        executor="serial",
    )
    assert np.all(np.diagonal(state0.G_q[LAYER], axis1=1, axis2=2) == 1)
    assert np.all(state0.G_q[LAYER][:, 0, 1:] == 4096)
    client.write_registration(root / "registration", registration)
    registry = Registry(root / "registry.db")
    provider.register(registry, root / "registration", srs=srs)  # in range: registers
    mask = np.zeros((OUT, IN), dtype=bool)
    mask[1, 2] = mask[6, 0] = True  # blocks 1 and 6 (chunks 0 and 1), one masked weight each
    return root, config, registry, state0, mask


def _request(mask, max_delta, request_id):
    return UnlearningRequest(request_id=request_id, model_id="tiny", masks={LAYER: mask}, max_delta=max_delta)


def _push_residuals(state: client.ClientState, spec) -> client.ClientState:
    """The same request answered with e_q = τ − 1 on every masked q (|S| = 1, G_qq = 1: ỹ_q = θ_q 2^s + e)."""
    wit = {k: np.array(v) for k, v in state.witness[LAYER].items()}
    tau = spec.tau
    G_q = state.G_q[LAYER]
    for b, q in np.argwhere(wit["mask"]):
        y = int(wit["theta_q"][b, q]) * (1 << spec.s) + tau - 1
        wit["y_q"][b, q] = y
        for i in range(B):
            if i == q:
                continue
            numerator = -int(G_q[b, i, q]) * y
            wit["delta_q"][b, i] = numerator >> spec.s
            wit["rem"][b, i] = numerator - (wit["delta_q"][b, i] << spec.s)
            wit["theta_new_q"][b, i] = wit["theta_q"][b, i] + wit["delta_q"][b, i]
        wit["rem"][b, q] = tau - 1 + tau  # e + τ
    return dataclasses.replace(state, witness={LAYER: wit})


def _bundle(root, state, request, srs, name):
    fields, blobs = client.prove(state, request, srs, progress=False, executor="serial")
    return client.write_bundle(root / name, fields, blobs), fields, blobs


def test_attack_a_is_accepted_within_the_documented_tolerance_under_a_loose_bound(attack_a, srs):
    root, config, registry, state0, mask = attack_a
    spec = config.spec
    request = _request(mask, LOOSE, "req-a")
    honest = client.unlearn(state0, request, rng=np.random.default_rng(1))
    pushed = _push_residuals(honest, spec)
    thetas = {}
    for name, state in (("honest", honest), ("pushed", pushed)):
        bundle, _, _ = _bundle(root, state, request, srs, name)
        provider.verify(registry, request, bundle, srs=srs, update_registry=False)  # accepted
        thetas[name] = state.witness[LAYER]["theta_new_q"]
    deviation = np.abs(thetas["honest"] - thetas["pushed"]) / 2.0**spec.f_w  # weight units
    # the documented tolerance: each accepted Δ within delta_error_bound of the float OBS update
    G_hat = dequantize(state0.G_q[LAYER], spec.f_g)
    tolerance = delta_error_bound(G_hat, honest.witness[LAYER]["mask"], spec)
    theta = dequantize(state0.theta_q[LAYER], spec.f_w)
    S = honest.witness[LAYER]["mask"]
    for name in thetas:
        delta = dequantize(thetas[name], spec.f_w) - theta
        float_delta = np.zeros_like(theta)
        for b, q in np.argwhere(S):
            float_delta[b] = -G_hat[b, :, q] * theta[b, q] / G_hat[b, q, q]
        off = ~S
        assert np.all(np.abs(delta - float_delta)[off] <= tolerance[off]), name
    # the residual freedom moves θ' by ≈ 2^f_g · (τ − 1) / 2^(s + f_w) ≈ 0.031 weight units, within 2× the bound
    assert 0.03 < deviation.max() <= 2 * tolerance.max()
    assert tolerance.max() == pytest.approx(2.0**-spec.f_w * (1 + 0.5 * 4096), rel=1e-12)
    # and the repair it programmed is far larger than anything honest OBS needs
    programmed = np.abs(dequantize(thetas["honest"], spec.f_w) - theta)[~S].max()
    assert programmed > 16 * PROTOCOL_MAX_DELTA


def test_the_programmed_repair_is_capped_by_the_request_bound(attack_a, srs):
    root, config, registry, state0, mask = attack_a
    tight = _request(mask, PROTOCOL_MAX_DELTA, "req-tight")
    # no witness exists: the repair attack A's G programs needs more than b_Δ bits
    with pytest.raises((WitnessError, QuantizationError), match="w_delta|Δ"):
        client.unlearn(state0, tight, rng=np.random.default_rng(2))
    # a bundle proven under a looser bound, answering the tight request, is rejected by name ...
    loose = dataclasses.replace(tight, max_delta=LOOSE)
    state = client.unlearn(state0, loose, rng=np.random.default_rng(3))
    bundle, fields, blobs = _bundle(root, state, loose, srs, "loose")
    with pytest.raises(provider.VerificationFailed) as info:
        provider.verify(registry, tight, bundle, srs=srs, update_registry=False)
    assert info.value.check == "bound"
    # ... and one that claims the tight bound does not verify against the tight circuit's key
    fields = {**fields, "max_delta": PROTOCOL_MAX_DELTA}
    lying = client.write_bundle(root / "lying", fields, blobs)
    with pytest.raises(provider.VerificationFailed) as info:
        provider.verify(registry, tight, lying, srs=srs, update_registry=False)
    assert info.value.check == "proof"
