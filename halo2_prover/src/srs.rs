//! KZG structured reference strings, file-backed.
//!
//! File format `jaxapex-srs/1` (all points in the standard uncompressed encoding: G1 96 bytes, G2 192):
//!
//! ```text
//! magic "JXSRS\0\0\x01" | K: u32 LE | [1]G2 | [s]G2 | g_i = [s^i]G1, i < 2^K
//!   | for k = 1..=K: the Lagrange basis of the 2^k domain, [L_i(s)]G1, i < 2^k
//! ```
//!
//! Storing the Lagrange basis of every k lets one SRS serve circuits of any size k <= K without the FFT
//! over G1 that deriving it from the monomial points takes. Parameters of one k are read from the file
//! when first needed and cached.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use ff::{BatchInvert, Field, PrimeField};
use group::{prime::PrimeCurveAffine, Curve, Group, UncompressedEncoding};
use midnight_curves::{pairing::Engine, G1Affine, G1Projective, G2Affine, G2Projective};
use midnight_proofs::{
    poly::kzg::{
        msm::msm_specific,
        params::{ParamsKZG, ParamsVerifierKZG},
    },
    utils::SerdeFormat,
};
use rayon::prelude::*;

use crate::{
    sized_kzg::{AffineBases, Msm, SizedParams},
    BackendError, Fr, E,
};

pub const MAGIC: &[u8; 8] = b"JXSRS\x00\x00\x01";
const G1_BYTES: usize = 96;
const G2_BYTES: usize = 192;
const HEADER: usize = 8 + 4 + 2 * G2_BYTES;

fn g_offset(i: usize) -> u64 {
    (HEADER + i * G1_BYTES) as u64
}

fn lagrange_offset(k_max: u32, k: u32) -> u64 {
    // The bases of 1..k-1 come first: sum_{j<k} 2^j = 2^k - 2 points.
    g_offset((1usize << k_max) + (1usize << k) - 2)
}

pub fn file_size(k_max: u32) -> u64 {
    lagrange_offset(k_max, k_max + 1)
}

pub fn root_of_unity(k: u32) -> Fr {
    let mut root = Fr::ROOT_OF_UNITY;
    for _ in k..Fr::S {
        root = root.square();
    }
    root
}

/// Fixed-base multiplication by the G1 generator: 32 windows of 8 bits, 255 precomputed multiples each,
/// so one product is 32 mixed additions instead of a full scalar multiplication.
struct GeneratorTable {
    windows: Vec<Vec<G1Affine>>,
}

impl GeneratorTable {
    fn new() -> Self {
        let mut base = G1Projective::generator();
        let mut projective = Vec::with_capacity(32 * 255);
        for _ in 0..32 {
            let mut acc = base;
            for _ in 1..256 {
                projective.push(acc);
                acc += base;
            }
            base = acc; // 256 · base
        }
        let mut affine = vec![G1Affine::identity(); projective.len()];
        G1Projective::batch_normalize(&projective, &mut affine);
        GeneratorTable {
            windows: affine.chunks(255).map(<[G1Affine]>::to_vec).collect(),
        }
    }

    fn mul(&self, s: &Fr) -> G1Projective {
        let bytes = s.to_repr();
        let mut acc = G1Projective::identity();
        for (window, &b) in self.windows.iter().zip(bytes.as_ref()) {
            if b != 0 {
                acc += &window[b as usize - 1];
            }
        }
        acc
    }
}

fn write_g1(w: &mut impl Write, scalars: &[Fr], table: &GeneratorTable) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 14;
    for chunk in scalars.chunks(CHUNK) {
        let projective: Vec<G1Projective> = chunk.par_iter().map(|s| table.mul(s)).collect();
        let mut affine = vec![G1Affine::identity(); projective.len()];
        G1Projective::batch_normalize(&projective, &mut affine);
        let bytes: Vec<u8> = affine
            .par_iter()
            .flat_map_iter(|p| p.to_uncompressed().as_ref().to_vec())
            .collect();
        w.write_all(&bytes)?;
    }
    Ok(())
}

/// Write the SRS of secret `s` for sizes up to 2^k_max.
pub fn generate(path: &Path, k_max: u32, s: Fr) -> Result<(), BackendError> {
    let io =
        |e: std::io::Error| BackendError::invalid(format!("writing SRS {}: {e}", path.display()));
    let table = GeneratorTable::new();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&k_max.to_le_bytes()).map_err(io)?;
    let g2 = G2Projective::generator();
    w.write_all(g2.to_affine().to_uncompressed().as_ref())
        .map_err(io)?;
    w.write_all((g2 * s).to_affine().to_uncompressed().as_ref())
        .map_err(io)?;

    let n = 1usize << k_max;
    let mut powers = vec![Fr::ONE; n];
    for i in 1..n {
        powers[i] = powers[i - 1] * s;
    }
    write_g1(&mut w, &powers, &table).map_err(io)?;

    for k in 1..=k_max {
        // L_i(s) = omega^i (s^n - 1) / (n (s - omega^i))
        let n = 1usize << k;
        let omega = root_of_unity(k);
        let mut omega_powers = vec![Fr::ONE; n];
        for i in 1..n {
            omega_powers[i] = omega_powers[i - 1] * omega;
        }
        let mut denominators: Vec<Fr> = omega_powers.iter().map(|w| s - w).collect();
        if denominators.iter().any(|d| bool::from(d.is_zero())) {
            return Err(BackendError::invalid(format!(
                "the secret is a 2^{k}-th root of unity"
            )));
        }
        denominators.batch_invert();
        let multiplier =
            (s.pow_vartime([n as u64]) - Fr::ONE) * Fr::from(n as u64).invert().unwrap();
        let scalars: Vec<Fr> = omega_powers
            .iter()
            .zip(&denominators)
            .map(|(w, inv)| multiplier * w * inv)
            .collect();
        write_g1(&mut w, &scalars, &table).map_err(io)?;
    }
    w.flush().map_err(io)
}

pub struct Srs {
    path: PathBuf,
    k_max: u32,
    /// Full point validation (subgroup checks and basis consistency) when the file is not pinned by a
    /// trusted hash.
    full_checks: bool,
    g2: G2Affine,
    s_g2: G2Affine,
    by_k: Mutex<HashMap<u32, Domain>>,
}

/// The prover parameters of one 2^k domain and the same bases in affine form (for `SizedKzg`).
#[derive(Clone)]
struct Domain {
    kzg: Arc<ParamsKZG<E>>,
    affine: Arc<AffineBases>,
}

impl Srs {
    /// Open an SRS file: header, G2 points and a pairing check that g_1 = s·g_0 for the s in G2.
    pub fn open(path: &Path, full_checks: bool) -> Result<Srs, BackendError> {
        let bad = |msg: String| BackendError::invalid(format!("SRS {}: {msg}", path.display()));
        let io = |e: std::io::Error| bad(e.to_string());
        let mut f = File::open(path).map_err(io)?;
        let mut header = [0u8; HEADER];
        f.read_exact(&mut header)
            .map_err(|_| bad("too short for an SRS file".into()))?;
        if &header[..8] != MAGIC {
            return Err(bad(
                "not an SRS file of this format (bad magic bytes)".into()
            ));
        }
        let k_max = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if k_max == 0 || k_max > Fr::S {
            return Err(bad(format!("k = {k_max} out of range [1, {}]", Fr::S)));
        }
        let size = f.metadata().map_err(io)?.len();
        if size != file_size(k_max) {
            return Err(bad(format!(
                "{size} bytes, an SRS of k = {k_max} has {}",
                file_size(k_max)
            )));
        }
        let g2 = decode_g2(&header[12..12 + G2_BYTES]).map_err(|m| bad(format!("[1]G2: {m}")))?;
        let s_g2 =
            decode_g2(&header[12 + G2_BYTES..HEADER]).map_err(|m| bad(format!("[s]G2: {m}")))?;
        if g2 != G2Affine::generator() {
            return Err(bad("[1]G2 is not the G2 generator".into()));
        }
        let g = read_g1(&mut f, g_offset(0), 2, true)
            .map_err(|m| bad(format!("monomial points: {m}")))?;
        if g[0] != G1Projective::generator() {
            return Err(bad(
                "the first monomial point is not the G1 generator".into()
            ));
        }
        if E::pairing(&g[1].to_affine(), &g2) != E::pairing(&g[0].to_affine(), &s_g2) {
            return Err(bad(
                "the monomial points are not powers of the secret committed in G2".into(),
            ));
        }
        Ok(Srs {
            path: path.to_owned(),
            k_max,
            full_checks,
            g2,
            s_g2,
            by_k: Mutex::new(HashMap::new()),
        })
    }

    pub fn k(&self) -> u32 {
        self.k_max
    }

    pub fn verifier_params(&self) -> ParamsVerifierKZG<E> {
        let bytes = self.s_g2.to_uncompressed();
        // `RawBytes` reads the standard uncompressed encoding (checked) for BLS12-381 points.
        ParamsVerifierKZG::<E>::read(&mut bytes.as_ref(), SerdeFormat::RawBytes)
            .expect("a checked G2 point reads back")
    }

    /// The prover parameters of the 2^k domain (read from the file once, then cached).
    pub fn for_k(&self, k: u32) -> Result<Arc<ParamsKZG<E>>, BackendError> {
        Ok(self.domain(k)?.kzg)
    }

    /// The `SizedKzg` parameters of the 2^k domain, computing commitments the `msm` way.
    pub fn sized_for_k(&self, k: u32, msm: Msm) -> Result<SizedParams, BackendError> {
        let d = self.domain(k)?;
        Ok(SizedParams::new(d.kzg, d.affine, msm))
    }

    fn domain(&self, k: u32) -> Result<Domain, BackendError> {
        if k == 0 || k > self.k_max {
            return Err(BackendError::invalid(format!(
                "the SRS supports circuits up to k = {}, this one needs k = {k}",
                self.k_max
            )));
        }
        let mut cache = self.by_k.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&k) {
            return Ok(p.clone());
        }
        let bad = |msg: String| {
            BackendError::invalid(format!("SRS {} (k = {k}): {msg}", self.path.display()))
        };
        let mut f = File::open(&self.path).map_err(|e| bad(e.to_string()))?;
        let n = 1usize << k;
        let g = read_g1(&mut f, g_offset(0), n, self.full_checks)
            .map_err(|m| bad(format!("monomial points: {m}")))?;
        let lagrange = read_g1(&mut f, lagrange_offset(self.k_max, k), n, self.full_checks)
            .map_err(|m| bad(format!("Lagrange points: {m}")))?;
        // sum_i L_i(s) = 1, and (full checks) sum_i omega^i L_i(s) = s.
        let sum = lagrange
            .par_iter()
            .cloned()
            .reduce(G1Projective::identity, |a, b| a + b);
        if sum != G1Projective::generator() {
            return Err(bad("the Lagrange points do not sum to the generator".into()));
        }
        if self.full_checks {
            let omega = root_of_unity(k);
            let mut powers = vec![Fr::ONE; n];
            for i in 1..n {
                powers[i] = powers[i - 1] * omega;
            }
            if msm_specific::<G1Affine>(&powers, &lagrange) != g[1] {
                return Err(bad(
                    "the Lagrange basis does not belong to the same secret".into()
                ));
            }
        }
        let affine = Arc::new(AffineBases::new(k, &g, &lagrange));
        let kzg = Arc::new(ParamsKZG::from_parts(
            k,
            g,
            Some(lagrange),
            self.g2.into(),
            self.s_g2.into(),
        ));
        let domain = Domain { kzg, affine };
        cache.insert(k, domain.clone());
        Ok(domain)
    }

    /// The Lagrange-basis points [L_r(s)]_1 of the given rows of the 2^k domain. From the cached
    /// parameters when `for_k` has loaded them; otherwise only those points are read from the file (each
    /// checked to be in G1), not the whole domain -- what a verifier needs for re-randomization bases.
    pub fn lagrange_rows(&self, k: u32, rows: &[usize]) -> Result<Vec<G1Projective>, BackendError> {
        if k == 0 || k > self.k_max {
            return Err(BackendError::invalid(format!(
                "the SRS supports circuits up to k = {}, this one needs k = {k}",
                self.k_max
            )));
        }
        let n = 1usize << k;
        if let Some(&r) = rows.iter().find(|&&r| r >= n) {
            return Err(BackendError::invalid(format!(
                "row {r} is outside the domain of 2^{k} rows"
            )));
        }
        if let Some(p) = self.by_k.lock().unwrap_or_else(|e| e.into_inner()).get(&k) {
            return Ok(rows.iter().map(|&r| p.kzg.g_lagrange()[r]).collect());
        }
        let bad = |msg: String| {
            BackendError::invalid(format!("SRS {} (k = {k}): {msg}", self.path.display()))
        };
        let mut f = File::open(&self.path).map_err(|e| bad(e.to_string()))?;
        let base = lagrange_offset(self.k_max, k);
        rows.iter()
            .map(|&r| {
                read_g1(&mut f, base + (r * G1_BYTES) as u64, 1, true)
                    .map(|points| points[0])
                    .map_err(|m| bad(format!("Lagrange point {r}: {m}")))
            })
            .collect()
    }
}

fn decode_g2(bytes: &[u8]) -> Result<G2Affine, String> {
    let mut repr = <G2Affine as UncompressedEncoding>::Uncompressed::default();
    repr.as_mut().copy_from_slice(bytes);
    Option::from(G2Affine::from_uncompressed(&repr)).ok_or_else(|| "invalid point".to_string())
}

/// Read `n` G1 points at `offset`: always checked to be on the curve; with `subgroup`, also in G1.
fn read_g1(
    f: &mut File,
    offset: u64,
    n: usize,
    subgroup: bool,
) -> Result<Vec<G1Projective>, String> {
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; n * G1_BYTES];
    f.read_exact(&mut bytes).map_err(|e| e.to_string())?;
    bytes
        .par_chunks_exact(G1_BYTES)
        .enumerate()
        .map(|(i, b)| {
            let mut repr = <G1Affine as UncompressedEncoding>::Uncompressed::default();
            repr.as_mut().copy_from_slice(b);
            let point = if subgroup {
                Option::from(G1Affine::from_uncompressed(&repr))
            } else {
                Option::<G1Affine>::from(G1Affine::from_uncompressed_unchecked(&repr))
                    .filter(|p| bool::from(G1Projective::from(p).is_on_curve()))
            };
            point
                .map(G1Projective::from)
                .ok_or_else(|| format!("point {i} is not a valid G1 point"))
        })
        .collect()
}
