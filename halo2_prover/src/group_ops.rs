//! BLS12-381 G1 arithmetic for the Python side's Sigma protocols (re-randomization proofs of
//! knowledge): one multi-scalar multiplication over compressed points, so Python needs no pure-Python
//! curve arithmetic on the hot path. Kept apart from the prover: it knows nothing about circuits.

use ff::PrimeField;
use group::{Group, GroupEncoding};
use midnight_curves::G1Projective;
use pyo3::{prelude::*, types::PyBytes};

use crate::{decode_point, Fr, Halo2Error};

/// Σ_i s_i·P_i over BLS12-381 G1. `points`: 48-byte compressed points; `scalars`: 32-byte little-endian
/// canonical scalars (one per point). Returns the 48-byte compressed sum (the identity is 0xc0 0…0).
#[pyfunction]
pub fn g1_msm<'py>(
    py: Python<'py>,
    points: Vec<Vec<u8>>,
    scalars: Vec<Vec<u8>>,
) -> PyResult<Bound<'py, PyBytes>> {
    if points.len() != scalars.len() {
        return Err(Halo2Error::new_err(format!(
            "g1_msm: {} points, {} scalars",
            points.len(),
            scalars.len()
        )));
    }
    let mut acc = G1Projective::identity();
    for (i, (p, s)) in points.iter().zip(&scalars).enumerate() {
        let point =
            decode_point(p).map_err(|e| Halo2Error::new_err(format!("g1_msm: point {i}: {e}")))?;
        let repr: [u8; 32] = s.as_slice().try_into().map_err(|_| {
            Halo2Error::new_err(format!(
                "g1_msm: scalar {i} has {} bytes, expected 32",
                s.len()
            ))
        })?;
        let scalar = Option::<Fr>::from(Fr::from_repr(repr))
            .ok_or_else(|| Halo2Error::new_err(format!("g1_msm: scalar {i} is not canonical")))?;
        acc += point * scalar;
    }
    Ok(PyBytes::new(py, acc.to_bytes().as_ref()))
}
