//! `circuit_compiler._halo2`: Halo2 (midnight-proofs, KZG over BLS12-381) keys, proofs, verification,
//! commitments and the mock prover for circuits described by `circuit_compiler.serialize`.
//!
//! Everything here is generic: the circuit comes in as data. Every entry point releases the GIL while it
//! computes, turns library errors and panics into Python exceptions, and never aborts the interpreter.

mod circuit;
mod group_ops;
pub mod sized_kzg;
mod srs;
mod structure;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::Arc,
};

use blake2b_simd::State as Blake2b;
use ff::{Field, PrimeField};
use group::GroupEncoding;
use midnight_curves::G1Projective;
use midnight_proofs::{
    dev::MockProver,
    plonk::{
        self, create_proof, keygen_pk, keygen_vk_with_k, prepare, ConstraintSystem, ProvingKey,
    },
    poly::{
        commitment::{Guard, PolynomialCommitmentScheme},
        kzg::{msm::DualMSM, KZGCommitmentScheme},
        EvaluationDomain,
    },
    transcript::{CircuitTranscript, Transcript},
    utils::SerdeFormat,
};
use pyo3::{
    create_exception,
    exceptions::PyException,
    prelude::*,
    types::{PyBytes, PyDict, PyTuple},
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use rand_core::OsRng;
use rayon::prelude::*;

use crate::{
    circuit::{GenericCircuit, Mode, Witness},
    sized_kzg::{Msm, SizedKzg},
    structure::{decode_values, Kind, Structure},
};

/// The BLS12-381 scalar field (midnight-curves calls it `Fq`).
pub type Fr = midnight_curves::Fq;
pub type E = midnight_curves::Bls12;
/// The verifier's scheme: midnight's KZG, unchanged.
type Scheme = KZGCommitmentScheme<E>;
/// The prover's scheme: the same KZG proofs, with this crate's commitment MSMs.
type ProverScheme = SizedKzg;
type Tr = CircuitTranscript<Blake2b>;

create_exception!(
    _halo2,
    Halo2Error,
    PyException,
    "An error from the Halo2 backend (bad input or library failure)."
);
create_exception!(
    _halo2,
    VerificationError,
    Halo2Error,
    "A proof was rejected; the message names the failed check."
);

/// Errors of this crate, turned into Python exceptions at the boundary.
#[derive(Debug)]
pub enum BackendError {
    Invalid(String),
    Verification(String),
}

impl BackendError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        BackendError::Invalid(msg.into())
    }
    fn rejected(msg: impl Into<String>) -> Self {
        BackendError::Verification(msg.into())
    }
}

impl From<BackendError> for PyErr {
    fn from(e: BackendError) -> PyErr {
        match e {
            BackendError::Invalid(m) => Halo2Error::new_err(m),
            BackendError::Verification(m) => VerificationError::new_err(m),
        }
    }
}

/// Run `f`, turning a panic into an error instead of unwinding into Python.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(BackendError::invalid(format!(
                "{what}: internal error: {msg}"
            )))
        }
    }
}

// ------------------------------------------------------------------------------------------------ SRS

/// A KZG structured reference string (powers of a secret in G1, the secret in G2).
#[pyclass(name = "Srs", module = "circuit_compiler._halo2", frozen)]
struct PySrs {
    inner: Arc<srs::Srs>,
}

#[pymethods]
impl PySrs {
    /// Write a development SRS of size 2^k to `path`, from a random secret (OS randomness, or a 32-byte
    /// seed for reproducible tests). Whoever ran it knows the secret and can forge proofs.
    #[staticmethod]
    #[pyo3(signature = (k, path, seed=None))]
    fn generate_unsafe(
        py: Python<'_>,
        k: u32,
        path: PathBuf,
        seed: Option<[u8; 32]>,
    ) -> PyResult<()> {
        check_k(k)?;
        py.allow_threads(|| {
            guarded("SRS setup", || {
                let s = match seed {
                    Some(seed) => Fr::random(ChaCha20Rng::from_seed(seed)),
                    None => Fr::random(OsRng),
                };
                srs::generate(&path, k, s)
            })
        })?;
        Ok(())
    }

    /// Write the SRS of the known secret `tau` (32-byte little-endian canonical scalar). Tests only.
    #[staticmethod]
    fn generate_from_secret(py: Python<'_>, k: u32, tau: [u8; 32], path: PathBuf) -> PyResult<()> {
        check_k(k)?;
        let s = Option::<Fr>::from(Fr::from_repr(tau))
            .ok_or_else(|| Halo2Error::new_err("tau is not a canonical scalar (< p)"))?;
        py.allow_threads(|| guarded("SRS setup", || srs::generate(&path, k, s)))?;
        Ok(())
    }

    /// Open an SRS file. `full_checks`: validate every point used (subgroup membership, consistent
    /// Lagrange bases); without them points are only checked to lie on the curve (for files pinned by a
    /// trusted hash).
    #[staticmethod]
    #[pyo3(signature = (path, full_checks=true))]
    fn open(py: Python<'_>, path: PathBuf, full_checks: bool) -> PyResult<Self> {
        let srs =
            py.allow_threads(|| guarded("SRS open", || srs::Srs::open(&path, full_checks)))?;
        Ok(PySrs {
            inner: Arc::new(srs),
        })
    }

    /// The largest circuit size 2^k this SRS supports.
    #[getter]
    fn k(&self) -> u32 {
        self.inner.k()
    }

    /// Read (and check) the parameters of the 2^k domain now rather than at first use.
    fn prepare(&self, py: Python<'_>, k: u32) -> PyResult<()> {
        let inner = self.inner.clone();
        py.allow_threads(|| guarded("SRS read", || inner.for_k(k).map(|_| ())))?;
        Ok(())
    }
}

fn check_k(k: u32) -> PyResult<()> {
    if !(1..=Fr::S).contains(&k) {
        return Err(Halo2Error::new_err(format!(
            "k = {k} out of range [1, {}]",
            Fr::S
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------- circuit structure

/// A parsed, validated circuit: structure JSON, fixed column values and copy constraints.
#[pyclass(name = "CircuitStructure", module = "circuit_compiler._halo2", frozen)]
struct PyStructure {
    inner: Arc<Structure>,
}

#[pymethods]
impl PyStructure {
    /// `fixed`: column name -> (encoding, bytes) for every fixed/selector/table column; `copies`: int64
    /// (m, 4) bytes. Both may be omitted when only the shape is needed (to read a verifying key).
    #[new]
    #[pyo3(signature = (structure_json, fixed=None, copies=None))]
    fn new(
        structure_json: &str,
        fixed: Option<&Bound<'_, PyDict>>,
        copies: Option<&[u8]>,
    ) -> PyResult<Self> {
        let mut s = Structure::from_json(structure_json)?;
        if let Some(fixed) = fixed {
            for (name, values) in decode_named(fixed, "fixed")? {
                s.set_fixed(&name, values)?;
            }
        }
        if let Some(copies) = copies {
            s.set_copies(copies)?;
        }
        Ok(PyStructure { inner: Arc::new(s) })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[getter]
    fn k(&self) -> u32 {
        self.inner.k
    }

    #[getter]
    fn rows(&self) -> usize {
        self.inner.rows
    }

    /// Rows Halo2 lets this circuit use at its k (2^k minus the blinding rows its queries require).
    #[getter]
    fn usable_rows(&self) -> usize {
        usable_rows(&self.inner)
    }

    /// Halo2 column counts and constraint-system degree, for reports.
    fn statistics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cs = constraint_system(&self.inner);
        let d = PyDict::new(py);
        d.set_item("advice_columns", cs.num_advice_columns())?;
        d.set_item("fixed_columns", cs.num_fixed_columns())?;
        d.set_item("instance_columns", cs.num_instance_columns())?;
        d.set_item("lookups", cs.lookups().len())?;
        d.set_item("gates", cs.gates().len())?;
        d.set_item("degree", cs.degree())?;
        d.set_item("blinding_factors", cs.blinding_factors())?;
        d.set_item("copies", self.inner.copies.len())?;
        Ok(d)
    }
}

fn constraint_system(s: &Arc<Structure>) -> ConstraintSystem<Fr> {
    let mut cs = ConstraintSystem::default();
    <GenericCircuit as plonk::Circuit<Fr>>::configure_with_params(&mut cs, s.clone());
    cs
}

fn usable_rows(s: &Arc<Structure>) -> usize {
    (1usize << s.k).saturating_sub(constraint_system(s).blinding_factors() + 1)
}

/// `{name: (encoding, bytes)}` -> `[(name, values)]`.
fn decode_named(d: &Bound<'_, PyDict>, what: &str) -> PyResult<Vec<(String, Vec<Fr>)>> {
    let mut out = Vec::with_capacity(d.len());
    for (name, value) in d.iter() {
        let name: String = name.extract()?;
        let tuple = value.downcast::<PyTuple>().map_err(|_| {
            Halo2Error::new_err(format!(
                "{what}/{name}: expected an (encoding, bytes) tuple"
            ))
        })?;
        let (encoding, data): (String, Bound<'_, PyBytes>) = tuple.extract()?;
        out.push((
            name.clone(),
            decode_values(&encoding, data.as_bytes(), &format!("{what}/{name}"))?,
        ));
    }
    Ok(out)
}

/// The witness (advice by column order) and the instance columns in Halo2 order (committed first).
fn decode_assignment(
    s: &Structure,
    advice: &Bound<'_, PyDict>,
    instance: &Bound<'_, PyDict>,
    committed: &Bound<'_, PyDict>,
) -> PyResult<(Witness, Vec<Vec<Fr>>)> {
    let mut by_position: Vec<Option<Vec<Fr>>> = vec![None; s.columns.len()];
    let mut fill = |d: &Bound<'_, PyDict>, kind: Kind, what: &str| -> PyResult<()> {
        for (name, values) in decode_named(d, what)? {
            let position = s
                .position(&name)
                .filter(|&p| s.columns[p].kind == kind)
                .ok_or_else(|| {
                    Halo2Error::new_err(format!(
                        "circuit {:?} has no {what} column {name:?}",
                        s.name
                    ))
                })?;
            if values.len() > s.rows {
                return Err(Halo2Error::new_err(format!(
                    "{what} column {name:?}: {} values for a circuit of {} rows",
                    values.len(),
                    s.rows
                )));
            }
            by_position[position] = Some(values);
        }
        Ok(())
    };
    fill(advice, Kind::Advice, "advice")?;
    fill(instance, Kind::Instance, "instance")?;
    fill(committed, Kind::Committed, "committed")?;

    let mut take = |position: usize| -> PyResult<Vec<Fr>> {
        by_position[position].take().ok_or_else(|| {
            let c = &s.columns[position];
            Halo2Error::new_err(format!("no values for {:?} column {:?}", c.kind, c.name))
        })
    };
    let witness = Witness {
        advice: s
            .columns_of(Kind::Advice)
            .map(&mut take)
            .collect::<PyResult<Vec<_>>>()?,
    };
    let mut instances = s
        .instance_order
        .iter()
        .map(|&p| take(p))
        .collect::<PyResult<Vec<_>>>()?;
    instances[s.num_committed..]
        .iter_mut()
        .for_each(trim_trailing_zeros);
    Ok((witness, instances))
}

/// Public instance columns are zero beyond their values, so trailing zeros change nothing but the cost:
/// the transcript hashes every given value and the verifier evaluates a Lagrange basis element per value.
/// Prover and verifier both drop them, so a column given with or without its zero padding verifies alike.
fn trim_trailing_zeros(values: &mut Vec<Fr>) {
    let len = values
        .iter()
        .rposition(|v| !bool::from(v.is_zero()))
        .map_or(0, |i| i + 1);
    values.truncate(len);
}

// ------------------------------------------------------------------------------------------------ keys

/// Proving key (which contains the verifying key) of one circuit structure on one SRS.
#[pyclass(name = "Keys", module = "circuit_compiler._halo2", frozen)]
struct PyKeys {
    pk: Arc<ProvingKey<Fr, ProverScheme>>,
    structure: Arc<Structure>,
}

/// A verifying key, bound to the structure it was read with.
#[pyclass(name = "VerifyingKey", module = "circuit_compiler._halo2", frozen)]
struct PyVerifyingKey {
    vk: Arc<plonk::VerifyingKey<Fr, Scheme>>,
    structure: Arc<Structure>,
}

/// Serialized verifying key: magic, the equality-enabled column positions (the structure JSON a verifier
/// holds has no copies, but they shape the permutation argument), then midnight-proofs' `VerifyingKey`
/// with compressed points. The positions are bound: they change the key's transcript hash.
const VK_MAGIC: &[u8; 6] = b"JXVK\x00\x01";

fn vk_to_bytes<CS: PolynomialCommitmentScheme<Fr>>(
    vk: &plonk::VerifyingKey<Fr, CS>,
    s: &Structure,
) -> Vec<u8> {
    let positions = s.equality_positions();
    let mut out = Vec::with_capacity(10 + 4 * positions.len());
    out.extend_from_slice(VK_MAGIC);
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    for p in positions {
        out.extend_from_slice(&(p as u32).to_le_bytes());
    }
    out.extend_from_slice(&vk.to_bytes(SerdeFormat::Processed));
    out
}

fn vk_from_bytes(
    data: &[u8],
    shape: &Structure,
) -> Result<(plonk::VerifyingKey<Fr, Scheme>, Structure), BackendError> {
    let bad = |msg: String| {
        BackendError::invalid(format!("verifying key of circuit {:?}: {msg}", shape.name))
    };
    if data.len() < 10 || &data[..6] != VK_MAGIC {
        return Err(bad(
            "not a verifying key of this format (bad magic bytes)".into()
        ));
    }
    let count = u32::from_le_bytes(data[6..10].try_into().unwrap()) as usize;
    let body = 10usize
        .checked_add(
            count
                .checked_mul(4)
                .ok_or_else(|| bad("bad column count".into()))?,
        )
        .filter(|&end| end <= data.len())
        .ok_or_else(|| {
            bad(format!(
                "truncated: {} bytes for {count} equality columns",
                data.len()
            ))
        })?;
    let positions: Vec<usize> = data[10..body]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let mut s = shape.clone();
    s.set_equality_positions(&positions)?;
    let s = Arc::new(s);
    let vk = plonk::VerifyingKey::<Fr, Scheme>::read::<_, GenericCircuit>(
        &mut &data[body..],
        SerdeFormat::Processed,
        s.clone(),
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok((vk, Arc::try_unwrap(s).unwrap_or_else(|s| (*s).clone())))
}

#[pymethods]
impl PyKeys {
    /// The verifying key, serialized.
    fn vk_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &vk_to_bytes(self.pk.get_vk(), &self.structure))
    }

    /// The verifier's key (read back from the prover's: the same bytes for the plain KZG scheme).
    fn verifying_key(&self, py: Python<'_>) -> PyResult<PyVerifyingKey> {
        let bytes = vk_to_bytes(self.pk.get_vk(), &self.structure);
        let shape = self.structure.clone();
        let (vk, s) = py
            .allow_threads(|| guarded("reading verifying key", || vk_from_bytes(&bytes, &shape)))?;
        Ok(PyVerifyingKey {
            vk: Arc::new(vk),
            structure: Arc::new(s),
        })
    }

    #[getter]
    fn k(&self) -> u32 {
        self.structure.k
    }
}

#[pymethods]
impl PyVerifyingKey {
    /// Read a verifying key written by `Keys.vk_bytes`, for this circuit structure (shape only).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, structure: &PyStructure, data: &[u8]) -> PyResult<Self> {
        let shape = structure.inner.clone();
        let data = data.to_vec();
        let (vk, s) =
            py.allow_threads(|| guarded("reading verifying key", || vk_from_bytes(&data, &shape)))?;
        Ok(PyVerifyingKey {
            vk: Arc::new(vk),
            structure: Arc::new(s),
        })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &vk_to_bytes(&self.vk, &self.structure))
    }

    #[getter]
    fn k(&self) -> u32 {
        self.structure.k
    }
}

/// Verifying and proving keys; depends only on the structure, the fixed values and the copies.
#[pyfunction]
fn keygen(py: Python<'_>, srs: &PySrs, structure: &PyStructure) -> PyResult<PyKeys> {
    let s = structure.inner.clone();
    s.check_complete()?;
    s.check_rows(usable_rows(&s))?;
    let srs = srs.inner.clone();
    let pk = py.allow_threads(|| {
        guarded("keygen", || {
            let params = srs.sized_for_k(s.k, Msm::Sized)?;
            let circuit = GenericCircuit {
                structure: s.clone(),
                witness: None,
                mode: Mode::Keygen,
                mock_pad_row: None,
            };
            let fail = |e: plonk::Error| {
                BackendError::invalid(format!("keygen of circuit {:?}: {e}", s.name))
            };
            let vk =
                keygen_vk_with_k::<Fr, ProverScheme, _>(&params, &circuit, s.k).map_err(fail)?;
            keygen_pk(vk, &circuit).map_err(fail)
        })
    })?;
    Ok(PyKeys {
        pk: Arc::new(pk),
        structure: structure.inner.clone(),
    })
}

/// The verifying key alone: what a verifier needs. It commits to the fixed and permutation polynomials
/// but never builds their extended forms (the bulk of a proving key's time and memory).
#[pyfunction]
fn keygen_vk(py: Python<'_>, srs: &PySrs, structure: &PyStructure) -> PyResult<PyVerifyingKey> {
    let s = structure.inner.clone();
    s.check_complete()?;
    s.check_rows(usable_rows(&s))?;
    let srs = srs.inner.clone();
    let vk = py.allow_threads(|| {
        guarded("keygen_vk", || {
            let params = srs.for_k(s.k)?;
            let circuit = GenericCircuit {
                structure: s.clone(),
                witness: None,
                mode: Mode::Keygen,
                mock_pad_row: None,
            };
            keygen_vk_with_k::<Fr, Scheme, _>(&params, &circuit, s.k).map_err(|e| {
                BackendError::invalid(format!("keygen_vk of circuit {:?}: {e}", s.name))
            })
        })
    })?;
    Ok(PyVerifyingKey {
        vk: Arc::new(vk),
        structure: structure.inner.clone(),
    })
}

// ------------------------------------------------------------------------------------ prove / verify

/// The MSM mode named by `scheme`: "sized" (this crate's MSMs) or "plain" (midnight's KZG commitments).
fn parse_scheme(scheme: &str) -> PyResult<Msm> {
    Msm::parse(scheme).ok_or_else(|| {
        Halo2Error::new_err(format!(
            "commitment scheme {scheme:?}: expected \"sized\" or \"plain\""
        ))
    })
}

/// Prove: `advice`, `instance`, `committed` map column names to (encoding, bytes). With `seed` the
/// blinding randomness is reproducible (tests only: a known seed removes zero knowledge). `scheme`:
/// how commitments are computed ("sized" or "plain"); the proof is a standard KZG proof either way.
/// `known`: committed column name -> its 48-byte commitment, which the caller vouches for ("sized" only:
/// the column is hashed instead of committed; a wrong point yields a proof that fails verification).
/// With `report`, returns (proof, {committed column name: commitment}) -- the known ones as given, the
/// others computed before the proof, which then takes them from the content cache ("sized": no MSM twice).
#[pyfunction]
#[pyo3(signature = (srs, keys, advice, instance, committed, seed=None, scheme="sized", known=None, report=false))]
#[allow(clippy::too_many_arguments)]
fn prove<'py>(
    py: Python<'py>,
    srs: &PySrs,
    keys: &PyKeys,
    advice: &Bound<'py, PyDict>,
    instance: &Bound<'py, PyDict>,
    committed: &Bound<'py, PyDict>,
    seed: Option<u64>,
    scheme: &str,
    known: Option<&Bound<'py, PyDict>>,
    report: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let msm = parse_scheme(scheme)?;
    let s = keys.structure.clone();
    let (witness, instances) = decode_assignment(&s, advice, instance, committed)?;
    let known = match known {
        Some(d) => decode_known(&s, d)?,
        None => Vec::new(),
    };
    let witness = Arc::new(witness);
    let (pk, srs) = (keys.pk.clone(), srs.inner.clone());
    let (proof, commitments) = py.allow_threads(|| {
        guarded("prove", || {
            let params = srs.sized_for_k(s.k, msm)?;
            let claimed: Vec<(&[Fr], G1Projective)> = known
                .iter()
                .map(|&(index, point)| (instances[index].as_slice(), point))
                .collect();
            let _claims = sized_kzg::Claims::new(&params, &claimed);
            let commitments: Vec<G1Projective> = if report {
                let domain = EvaluationDomain::<Fr>::new(1, s.k);
                (0..s.num_committed)
                    .map(|index| match known.iter().find(|&&(i, _)| i == index) {
                        Some(&(_, point)) => point,
                        None => {
                            let mut poly = domain.empty_lagrange();
                            poly.iter_mut()
                                .zip(&instances[index])
                                .for_each(|(p, v)| *p = *v);
                            ProverScheme::commit_lagrange(&params, &poly)
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let circuit = GenericCircuit {
                structure: s.clone(),
                witness: Some(witness),
                mode: Mode::Prove,
                mock_pad_row: None,
            };
            let slices: Vec<&[Fr]> = instances.iter().map(Vec::as_slice).collect();
            let mut transcript = Tr::init();
            let result = match seed {
                Some(seed) => create_proof::<Fr, ProverScheme, Tr, _>(
                    &params,
                    &pk,
                    &[circuit],
                    s.num_committed,
                    &[&slices],
                    &mut transcript,
                    ChaCha20Rng::seed_from_u64(seed),
                ),
                None => create_proof::<Fr, ProverScheme, Tr, _>(
                    &params,
                    &pk,
                    &[circuit],
                    s.num_committed,
                    &[&slices],
                    &mut transcript,
                    OsRng,
                ),
            };
            result
                .map_err(|e| BackendError::invalid(format!("proving circuit {:?}: {e}", s.name)))?;
            Ok((transcript.finalize(), commitments))
        })
    })?;
    let proof = PyBytes::new(py, &proof);
    if !report {
        return Ok(proof.into_any());
    }
    let by_name = PyDict::new(py);
    for (&position, point) in s.instance_order[..s.num_committed].iter().zip(&commitments) {
        by_name.set_item(
            &s.columns[position].name,
            PyBytes::new(py, point.to_bytes().as_ref()),
        )?;
    }
    Ok((proof, by_name).into_pyobject(py)?.into_any())
}

/// Claimed commitments: (index among the committed instance columns, point), checked by name.
fn decode_known(s: &Structure, known: &Bound<'_, PyDict>) -> PyResult<Vec<(usize, G1Projective)>> {
    let mut out = Vec::with_capacity(known.len());
    for (name, point) in known.iter() {
        let name: String = name.extract()?;
        let index = s.instance_order[..s.num_committed]
            .iter()
            .position(|&p| s.columns[p].name == name)
            .ok_or_else(|| {
                Halo2Error::new_err(format!(
                    "known commitment for {name:?}: circuit {:?} has no committed column of that name",
                    s.name
                ))
            })?;
        let bytes: Vec<u8> = point.extract()?;
        let point = decode_point(&bytes)
            .map_err(|e| Halo2Error::new_err(format!("known commitment for {name:?}: {e}")))?;
        out.push((index, point));
    }
    Ok(out)
}

/// The commitments of the committed instance columns in Halo2 order, decoded and checked by name.
fn decode_commitments(
    s: &Structure,
    commitments: &Bound<'_, PyDict>,
) -> PyResult<Vec<G1Projective>> {
    let mut committed = Vec::with_capacity(s.num_committed);
    for &position in &s.instance_order[..s.num_committed] {
        let name = &s.columns[position].name;
        let item = commitments.get_item(name)?.ok_or_else(|| {
            VerificationError::new_err(format!("no commitment given for committed column {name:?}"))
        })?;
        let bytes: Vec<u8> = item.extract()?;
        committed.push(
            decode_point(&bytes)
                .map_err(|m| VerificationError::new_err(format!("commitment of {name:?}: {m}")))?,
        );
    }
    for key in commitments.keys() {
        let name: String = key.extract()?;
        if !s.instance_order[..s.num_committed]
            .iter()
            .any(|&p| s.columns[p].name == name)
        {
            return Err(VerificationError::new_err(format!(
                "circuit {:?} has no committed column {name:?}",
                s.name
            )));
        }
    }
    Ok(committed)
}

/// Everything but the final pairing check: read the proof, check the transcript is fully consumed, and
/// return the KZG guard (the two MSMs whose pairing equation decides the proof).
fn prepare_one(
    vk: &plonk::VerifyingKey<Fr, Scheme>,
    proof: &[u8],
    publics: &[Vec<Fr>],
    committed: &[G1Projective],
) -> Result<DualMSM<E>, BackendError> {
    let slices: Vec<&[Fr]> = publics.iter().map(Vec::as_slice).collect();
    let mut transcript = Tr::init_from_bytes(proof);
    let guard = prepare::<Fr, Scheme, Tr>(vk, &[committed], &[&slices], &mut transcript)
        .map_err(|e| BackendError::rejected(describe_rejection(&e)))?;
    // midnight-proofs 0.8.3 does not check this itself: bytes appended to a valid proof must not
    // give another valid proof.
    transcript
        .assert_empty()
        .map_err(|_| BackendError::rejected("malformed proof: trailing bytes after the proof"))?;
    Ok(guard)
}

const PAIRING_FAILED: &str = "final KZG pairing check failed: the proof does not open the committed \
     polynomials consistently with this verifying key, these public instances and these commitments";

/// Verify; raises `VerificationError` naming the failed check. `instance` maps public column names to
/// (encoding, bytes); `commitments` maps committed column names to 48-byte compressed G1 points.
#[pyfunction]
fn verify(
    py: Python<'_>,
    srs: &PySrs,
    vk: &PyVerifyingKey,
    proof: &[u8],
    instance: &Bound<'_, PyDict>,
    commitments: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let s = vk.structure.clone();
    let publics = decode_publics(&s, instance)?;
    let committed = decode_commitments(&s, commitments)?;
    let (vk, srs, proof) = (vk.vk.clone(), srs.inner.clone(), proof.to_vec());
    py.allow_threads(|| {
        guarded("verify", || {
            let guard = prepare_one(&vk, &proof, &publics, &committed)?;
            guard
                .verify(&srs.verifier_params())
                .map_err(|_| BackendError::rejected(PAIRING_FAILED))
        })
    })?;
    Ok(())
}

/// Verify many proofs of one verifying key with a single final pairing check: each proof's KZG guard is
/// scaled by a fresh random scalar and the guards are summed, so the batch passes only if (except with
/// probability ~n/p) every proof would. `items`: a list of (proof, instance dict, commitments dict).
/// Raises `VerificationError` for the first proof that cannot be prepared (message prefixed with its
/// index) or, when only the combined pairing check fails, without naming a proof: the caller then
/// verifies one by one to locate it.
#[pyfunction]
fn verify_batch(
    py: Python<'_>,
    srs: &PySrs,
    vk: &PyVerifyingKey,
    items: Vec<(Vec<u8>, Bound<'_, PyDict>, Bound<'_, PyDict>)>,
) -> PyResult<()> {
    let s = vk.structure.clone();
    let mut decoded = Vec::with_capacity(items.len());
    for (i, (proof, instance, commitments)) in items.into_iter().enumerate() {
        let prefix = |e: PyErr| VerificationError::new_err(format!("proof {i}: {e}"));
        let publics = decode_publics(&s, &instance).map_err(prefix)?;
        let committed = decode_commitments(&s, &commitments).map_err(prefix)?;
        decoded.push((proof, publics, committed));
    }
    let (vk, srs) = (vk.vk.clone(), srs.inner.clone());
    py.allow_threads(|| {
        guarded("verify_batch", || {
            let guards = decoded
                .par_iter()
                .enumerate()
                .map(|(i, (proof, publics, committed))| {
                    prepare_one(&vk, proof, publics, committed).map_err(|e| match e {
                        BackendError::Verification(m) => {
                            BackendError::rejected(format!("proof {i}: {m}"))
                        }
                        BackendError::Invalid(m) => {
                            BackendError::invalid(format!("proof {i}: {m}"))
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut total = DualMSM::<E>::init();
            for mut guard in guards {
                guard.scale(Fr::random(OsRng));
                total.add_msm(guard);
            }
            total
                .verify(&srs.verifier_params())
                .map_err(|_| BackendError::rejected(PAIRING_FAILED))
        })
    })?;
    Ok(())
}

/// The public instance columns in Halo2 order, for the verifier.
fn decode_publics(s: &Structure, instance: &Bound<'_, PyDict>) -> PyResult<Vec<Vec<Fr>>> {
    let mut publics = Vec::with_capacity(s.instance_order.len() - s.num_committed);
    let given = decode_named(instance, "instance")?;
    let mut by_name: std::collections::HashMap<String, Vec<Fr>> = given.into_iter().collect();
    for &position in &s.instance_order[s.num_committed..] {
        let c = &s.columns[position];
        let values = by_name.remove(&c.name).ok_or_else(|| {
            VerificationError::new_err(format!("no values for public instance column {:?}", c.name))
        })?;
        let mut values = values;
        trim_trailing_zeros(&mut values);
        publics.push(values);
    }
    if let Some(name) = by_name.keys().next() {
        return Err(VerificationError::new_err(format!(
            "circuit {:?} has no public instance column {name:?}",
            s.name
        )));
    }
    Ok(publics)
}

fn describe_rejection(e: &plonk::Error) -> String {
    match e {
        plonk::Error::Transcript(io) => format!("malformed proof: {io}"),
        plonk::Error::InvalidInstances => {
            "the instances do not match the circuit's instance columns".to_string()
        }
        // midnight-proofs maps every failure to read the opening proof (or trailing bytes) to `Opening`.
        plonk::Error::Opening => {
            "malformed proof: its multi-opening part could not be read (truncated or trailing bytes)".to_string()
        }
        plonk::Error::InstanceTooLarge => "an instance column is longer than the circuit's usable rows".to_string(),
        other => format!("proof rejected: {other}"),
    }
}

pub(crate) fn decode_point(bytes: &[u8]) -> Result<G1Projective, String> {
    if bytes.len() != 48 {
        return Err(format!(
            "{} bytes, a compressed G1 point has 48",
            bytes.len()
        ));
    }
    let mut repr = <G1Projective as GroupEncoding>::Repr::default();
    repr.as_mut().copy_from_slice(bytes);
    Option::from(G1Projective::from_bytes(&repr))
        .ok_or_else(|| "not a valid compressed G1 point".to_string())
}

/// KZG commitment of one column in the Lagrange basis of the 2^k domain (values beyond the array are
/// zero), exactly as the prover commits a committed instance column. Returns 48 compressed bytes.
/// With the "sized" scheme the result is cached, so a proof of the same column reuses it.
#[pyfunction]
#[pyo3(signature = (srs, k, encoding, data, scheme="sized"))]
fn commit<'py>(
    py: Python<'py>,
    srs: &PySrs,
    k: u32,
    encoding: &str,
    data: &[u8],
    scheme: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let msm = parse_scheme(scheme)?;
    let values = decode_values(encoding, data, "committed values")?;
    if values.len() > (1usize << k) {
        return Err(Halo2Error::new_err(format!(
            "{} values do not fit a domain of 2^{k}",
            values.len()
        )));
    }
    let srs = srs.inner.clone();
    let point = py.allow_threads(|| {
        guarded("commit", || {
            let params = srs.sized_for_k(k, msm)?;
            let domain = EvaluationDomain::<Fr>::new(1, k);
            let mut poly = domain.empty_lagrange();
            poly.iter_mut().zip(values).for_each(|(p, v)| *p = v);
            Ok(ProverScheme::commit_lagrange(&params, &poly))
        })
    })?;
    Ok(PyBytes::new(py, point.to_bytes().as_ref()))
}

/// Calls, wall seconds and process CPU seconds of the prover's commitment scheme since the last reset,
/// process-wide: {"commit_lagrange": (calls, wall, cpu), "commit": ..., "multi_open": ...,
/// "cache_hits": (hits, 0.0, 0.0)}.
#[pyfunction]
#[pyo3(signature = (reset=false))]
fn commitment_stats(py: Python<'_>, reset: bool) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, figures) in sized_kzg::stats(reset) {
        d.set_item(name, figures)?;
    }
    Ok(d)
}

/// Forget every cached commitment of the "sized" scheme.
#[pyfunction]
fn clear_commitment_cache() {
    sized_kzg::clear_cache();
}

/// [L_r(τ)]_1 for each row r of the 2^k domain -- the commitment of the unit column at r -- read from the
/// SRS's Lagrange basis (no MSM): the bases of re-randomization proofs. 48 compressed bytes per row.
#[pyfunction]
fn lagrange_points<'py>(
    py: Python<'py>,
    srs: &PySrs,
    k: u32,
    rows: Vec<usize>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let srs = srs.inner.clone();
    let points = py.allow_threads(|| {
        guarded("lagrange_points", || {
            let points = srs.lagrange_rows(k, &rows)?;
            Ok(points.iter().map(|p| p.to_bytes()).collect::<Vec<_>>())
        })
    })?;
    Ok(points
        .iter()
        .map(|p| PyBytes::new(py, p.as_ref()))
        .collect())
}

/// Run midnight-proofs' MockProver on the domain 2^k; returns its failures as strings (empty: satisfied).
#[pyfunction]
fn mock_prove(
    py: Python<'_>,
    structure: &PyStructure,
    advice: &Bound<'_, PyDict>,
    instance: &Bound<'_, PyDict>,
    committed: &Bound<'_, PyDict>,
) -> PyResult<Vec<String>> {
    let s = structure.inner.clone();
    s.check_complete()?;
    s.check_rows(usable_rows(&s))?;
    let (witness, instances) = decode_assignment(&s, advice, instance, committed)?;
    let witness = Arc::new(witness);
    let result = py.allow_threads(|| {
        guarded("mock prover", || {
            let circuit = GenericCircuit {
                structure: s.clone(),
                witness: Some(witness),
                mode: Mode::Mock,
                mock_pad_row: mock_pad_row(&s),
            };
            let prover = MockProver::run(&circuit, instances).map_err(|e| {
                BackendError::invalid(format!("mock prover on circuit {:?}: {e}", s.name))
            })?;
            Ok(match prover.verify() {
                Ok(()) => vec![],
                Err(failures) => failures.iter().map(|f| f.to_string()).collect(),
            })
        })
    })?;
    Ok(result)
}

/// The MockProver sizes its domain from the last assigned row; assigning a zero at this row makes that
/// domain exactly 2^k, so rotations wrap as in the real prover.
fn mock_pad_row(s: &Arc<Structure>) -> Option<usize> {
    let cs = constraint_system(s);
    let max_positive_rotation = cs
        .advice_queries()
        .iter()
        .map(|(_, r)| r.0)
        .chain(cs.fixed_queries().iter().map(|(_, r)| r.0))
        .chain(cs.instance_queries().iter().map(|(_, r)| r.0))
        .filter(|&r| r > 0)
        .max()
        .unwrap_or(0) as usize;
    let n = 1usize << s.k;
    let row = n.checked_sub(cs.blinding_factors() + 2 + max_positive_rotation)?;
    let last_assigned = s
        .fixed
        .iter()
        .flatten()
        .map(Vec::len)
        .chain([s.rows])
        .max()
        .unwrap_or(0);
    (row >= last_assigned).then_some(row)
}

/// The scalar field modulus (hex string, as midnight-curves reports it).
#[pyfunction]
fn scalar_modulus() -> &'static str {
    Fr::MODULUS
}

#[pymodule]
fn _halo2(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Halo2Error", m.py().get_type::<Halo2Error>())?;
    m.add("VerificationError", m.py().get_type::<VerificationError>())?;
    m.add_class::<PySrs>()?;
    m.add_class::<PyStructure>()?;
    m.add_class::<PyKeys>()?;
    m.add_class::<PyVerifyingKey>()?;
    m.add_function(wrap_pyfunction!(keygen, m)?)?;
    m.add_function(wrap_pyfunction!(keygen_vk, m)?)?;
    m.add_function(wrap_pyfunction!(verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(prove, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(commit, m)?)?;
    m.add_function(wrap_pyfunction!(lagrange_points, m)?)?;
    m.add_function(wrap_pyfunction!(commitment_stats, m)?)?;
    m.add_function(wrap_pyfunction!(clear_commitment_cache, m)?)?;
    m.add_function(wrap_pyfunction!(group_ops::g1_msm, m)?)?;
    m.add_function(wrap_pyfunction!(mock_prove, m)?)?;
    m.add_function(wrap_pyfunction!(scalar_modulus, m)?)?;
    Ok(())
}
