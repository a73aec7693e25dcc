//! `SizedKzg`: KZG over BLS12-381 with this crate's own commitment MSMs.
//!
//! Opening (`multi_open`) is midnight-proofs' `KZGCommitmentScheme<Bls12>`, unchanged; commitments are the
//! same points computed faster, so every proof is a standard KZG proof that the unmodified midnight
//! verifier (`KZGCommitmentScheme`) accepts:
//!
//! * the bases are converted to affine once per SRS domain (midnight converts them on every call);
//! * each column is split into small non-negative scalars, small negative ones (p − x, committed as −x)
//!   and full-size ones, grouped by bit length, and each group runs blst's Pippenger at its real bit
//!   length (midnight always runs 255-bit windows, also for 12-bit G entries and 15-bit limbs);
//! * `commit_lagrange` results are cached by the content of the column (a bounded LRU keyed by a
//!   BLAKE2b hash), so columns committed in every proof -- the committed θ and G columns -- are committed
//!   once per process (blinded columns, unique by construction, are neither hashed nor cached);
//! * a caller that already knows a committed column's commitment (a client holds its registered
//!   commitments, and re-randomizes them with a few point additions) vouches for it with [`Claims`] for the
//!   duration of one proof: the column is hashed, not committed. A claim never enters the cache, so a
//!   wrong one only makes that proof fail verification (its transcript absorbs a point the verifier's
//!   commitment does not match).
//!
//! `Msm::Reference` runs midnight's own `KZGCommitmentScheme::commit{,_lagrange}` instead (the reference
//! the tests and benchmarks compare with). Both modes count their calls and time (`stats`).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use blake2b_simd::Params as Blake2bParams;
use blst::{blst_p1, blst_p1_affine, p1_affines, MultiPoint};
use ff::Field;
use group::Group;
use midnight_curves::{G1Projective, G2Projective};
use midnight_proofs::{
    poly::{
        commitment::{Guard, Params, PolynomialCommitmentScheme},
        kzg::{
            msm::DualMSM,
            params::{ParamsKZG, ParamsVerifierKZG},
            KZGCommitmentScheme,
        },
        Coeff, Error, LagrangeCoeff, Polynomial, ProverQuery, VerifierQuery,
    },
    transcript::{Hashable, Sampleable, Transcript},
};
use rand_core::RngCore;
use rayon::prelude::*;

use crate::{Fr, E};

type Kzg = KZGCommitmentScheme<E>;

/// How commitments are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msm {
    /// Affine bases, sized scalar groups, content cache (the default).
    Sized,
    /// midnight-proofs' `KZGCommitmentScheme` commitments, unchanged.
    Reference,
}

impl Msm {
    pub fn parse(name: &str) -> Option<Msm> {
        match name {
            "sized" => Some(Msm::Sized),
            "plain" => Some(Msm::Reference),
            _ => None,
        }
    }
}

/// The bases of one SRS domain in affine form, and a fingerprint of the SRS for the content cache.
pub struct AffineBases {
    monomial: Vec<blst_p1_affine>,
    lagrange: Vec<blst_p1_affine>,
    fingerprint: [u8; 32],
}

impl AffineBases {
    /// `g`: the monomial points [s^i]G1; `lagrange`: [L_i(s)]G1, both of the 2^k domain.
    pub fn new(k: u32, g: &[G1Projective], lagrange: &[G1Projective]) -> Self {
        Self::from_affine(k, to_affine(g), to_affine(lagrange))
    }

    fn from_affine(k: u32, monomial: Vec<blst_p1_affine>, lagrange: Vec<blst_p1_affine>) -> Self {
        let fingerprint = fingerprint(k, &monomial, &lagrange);
        AffineBases {
            monomial,
            lagrange,
            fingerprint,
        }
    }
}

fn to_affine(points: &[G1Projective]) -> Vec<blst_p1_affine> {
    let raw: Vec<blst_p1> = points.iter().map(|p| *p.as_ref()).collect();
    p1_affines::from(&raw).as_slice().to_vec()
}

/// Distinct SRS secrets or domains give distinct fingerprints (the second points differ).
fn fingerprint(k: u32, monomial: &[blst_p1_affine], lagrange: &[blst_p1_affine]) -> [u8; 32] {
    let mut h = Blake2bParams::new().hash_length(32).to_state();
    h.update(b"jaxapex sized-kzg bases");
    h.update(&k.to_le_bytes());
    for p in monomial.iter().take(2).chain(lagrange.iter().take(2)) {
        for limb in p.x.l.iter().chain(&p.y.l) {
            h.update(&limb.to_le_bytes());
        }
    }
    h.finalize().as_bytes().try_into().unwrap()
}

/// Prover parameters of `SizedKzg`: midnight's KZG parameters (for opening), their affine bases, and
/// the MSM mode. Cheap to clone (shared parts).
#[derive(Clone)]
pub struct SizedParams {
    kzg: Arc<ParamsKZG<E>>,
    bases: Arc<AffineBases>,
    msm: Msm,
}

impl std::fmt::Debug for SizedParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SizedParams(k = {}, {:?})", self.kzg.max_k(), self.msm)
    }
}

impl SizedParams {
    pub fn new(kzg: Arc<ParamsKZG<E>>, bases: Arc<AffineBases>, msm: Msm) -> Self {
        assert_eq!(bases.lagrange.len(), kzg.g_lagrange().len());
        SizedParams { kzg, bases, msm }
    }

    /// Parameters from a random secret (tests and `gen_params`: whoever controls `rng` knows it).
    pub fn unsafe_setup(k: u32, mut rng: impl RngCore, msm: Msm) -> Self {
        let s = Fr::random(&mut rng);
        let n = 1usize << k;
        let mut powers = vec![Fr::ONE; n];
        for i in 1..n {
            powers[i] = powers[i - 1] * s;
        }
        let g: Vec<G1Projective> = powers
            .par_iter()
            .map(|p| G1Projective::generator() * p)
            .collect();
        let g2 = G2Projective::generator();
        let kzg = ParamsKZG::<E>::from_parts(k, g.clone(), None, g2, g2 * s);
        let bases = AffineBases::new(k, &g, kzg.g_lagrange());
        SizedParams::new(Arc::new(kzg), Arc::new(bases), msm)
    }

    pub fn kzg(&self) -> &ParamsKZG<E> {
        &self.kzg
    }

    pub fn with_msm(&self, msm: Msm) -> Self {
        SizedParams {
            msm,
            ..self.clone()
        }
    }
}

impl Params for SizedParams {
    fn max_k(&self) -> u32 {
        self.kzg.max_k()
    }

    fn downsize(&mut self, new_k: u32) {
        if new_k == self.max_k() {
            return;
        }
        let kzg = Arc::make_mut(&mut self.kzg);
        kzg.downsize(new_k);
        let monomial = self.bases.monomial[..1usize << new_k].to_vec();
        let lagrange = to_affine(kzg.g_lagrange());
        self.bases = Arc::new(AffineBases::from_affine(new_k, monomial, lagrange));
    }
}

fn from_raw(raw: blst_p1) -> G1Projective {
    let mut p = G1Projective::identity();
    *p.as_mut() = raw;
    p
}

// ------------------------------------------------------------------------------------------ sized MSM

/// Scalars at most this long (or whose negation is) are "small"; longer ones run at full length.
const SMALL_BITS: usize = 128;
/// Upper bit lengths of the small groups: a column's 1-bit, byte, 16-bit... values each get their own
/// Pippenger run, so a few wider values do not lengthen the windows of all the others.
const CLASSES: [usize; 6] = [1, 8, 16, 32, 64, SMALL_BITS];
const FULL_BITS: usize = 255;
/// Groups: (non-negative, class) for each class, then (negative, class), then one full-size group.
const GROUPS: usize = 2 * CLASSES.len() + 1;
const FULL_GROUP: u8 = (GROUPS - 1) as u8;

fn bit_length(le: &[u8; 32]) -> usize {
    le.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| 8 * i + 8 - le[i].leading_zeros() as usize)
}

fn class_of(bits: usize) -> usize {
    CLASSES
        .iter()
        .position(|&c| bits <= c)
        .expect("bits <= SMALL_BITS")
}

/// Which group a scalar goes to, its bit length, and the little-endian bytes to multiply by (the
/// negation's for a small negative scalar); `None` for zero.
fn classify(s: &Fr, le: [u8; 32]) -> Option<(u8, usize, [u8; 32])> {
    let bits = bit_length(&le);
    if bits == 0 {
        return None;
    }
    if bits <= SMALL_BITS {
        return Some((class_of(bits) as u8, bits, le));
    }
    let neg = (-*s).to_bytes_le();
    let neg_bits = bit_length(&neg);
    if neg_bits <= SMALL_BITS {
        return Some(((CLASSES.len() + class_of(neg_bits)) as u8, neg_bits, neg));
    }
    Some((FULL_GROUP, FULL_BITS, le))
}

/// Σ_i scalars[i]·bases[i], one Pippenger run per group at the group's longest bit length.
/// `le[i]` is `scalars[i].to_bytes_le()`.
fn msm_sized(bases: &[blst_p1_affine], scalars: &[Fr], le: &[[u8; 32]]) -> G1Projective {
    assert!(bases.len() >= scalars.len());
    let classified: Vec<Option<(u8, usize, [u8; 32])>> = scalars
        .iter()
        .zip(le)
        .map(|(s, b)| classify(s, *b))
        .collect();
    let mut counts = [0usize; GROUPS];
    let mut bits = [0usize; GROUPS];
    for (g, b, _) in classified.iter().flatten() {
        counts[*g as usize] += 1;
        bits[*g as usize] = bits[*g as usize].max(*b);
    }
    let mut total = G1Projective::identity();
    for group in 0..GROUPS {
        if counts[group] == 0 {
            continue;
        }
        let nbits = bits[group];
        let nbytes = nbits.div_ceil(8);
        // A group holding the whole column (quotient pieces, dense columns) uses the bases in place.
        let whole = counts[group] == scalars.len();
        let mut points = Vec::with_capacity(if whole { 0 } else { counts[group] });
        let mut bytes = Vec::with_capacity(counts[group] * nbytes);
        for (base, c) in bases.iter().zip(&classified) {
            if let Some((g, _, b)) = c {
                if *g as usize == group {
                    if !whole {
                        points.push(*base);
                    }
                    bytes.extend_from_slice(&b[..nbytes]);
                }
            }
        }
        let points = if whole {
            &bases[..scalars.len()]
        } else {
            points.as_slice()
        };
        let sum = from_raw(points.mult(&bytes, nbits));
        let negative = (CLASSES.len()..2 * CLASSES.len()).contains(&group);
        if negative {
            total -= &sum;
        } else {
            total += &sum;
        }
    }
    total
}

fn le_bytes(scalars: &[Fr]) -> Vec<[u8; 32]> {
    scalars.par_iter().map(Fr::to_bytes_le).collect()
}

// ------------------------------------------------------------------------------------- content cache

/// Cached `commit_lagrange` results: enough for a few proofs' columns at B = 128 (~150 per proof);
/// each entry is ~200 bytes.
const CACHE_ENTRIES: usize = 4096;

struct CommitCache {
    entries: HashMap<[u8; 32], (G1Projective, u64)>,
    clock: u64,
}

static CACHE: Mutex<Option<CommitCache>> = Mutex::new(None);

/// Whether a column may recur: the prover fills the last rows of advice, lookup and permutation columns
/// with random blinding values, so a column ending in a nonzero value is unique and not worth hashing;
/// committed instance columns never reach those rows (midnight refuses longer instances).
fn cacheable(values: &[Fr], domain: usize) -> bool {
    values.len() < domain || values.last().is_none_or(|v| bool::from(v.is_zero()))
}

fn content_key(fingerprint: &[u8; 32], le: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Blake2bParams::new().hash_length(32).to_state();
    h.update(fingerprint);
    h.update(&(le.len() as u64).to_le_bytes());
    for b in le {
        h.update(b);
    }
    h.finalize().as_bytes().try_into().unwrap()
}

fn cache_get(key: &[u8; 32]) -> Option<G1Projective> {
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.as_mut()?;
    cache.clock += 1;
    let clock = cache.clock;
    cache.entries.get_mut(key).map(|(point, used)| {
        *used = clock;
        *point
    })
}

fn cache_put(key: [u8; 32], point: G1Projective) {
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(|| CommitCache {
        entries: HashMap::new(),
        clock: 0,
    });
    if cache.entries.len() >= CACHE_ENTRIES {
        // Least recently used first; a linear scan is negligible next to one MSM.
        if let Some(oldest) = cache
            .entries
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| *k)
        {
            cache.entries.remove(&oldest);
        }
    }
    cache.clock += 1;
    let clock = cache.clock;
    cache.entries.insert(key, (point, clock));
}

/// Drop every cached commitment (tests, and benchmarks that must not reuse a commitment).
pub fn clear_cache() {
    *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

// ------------------------------------------------------------------------------- claimed commitments

/// Content key -> (claimed point, how many live [`Claims`] hold it).
type ClaimTable = HashMap<[u8; 32], (G1Projective, usize)>;

static CLAIMS: Mutex<Option<ClaimTable>> = Mutex::new(None);

/// Commitments vouched for by the caller, served by `commit_lagrange` while this value lives (one proof).
pub struct Claims {
    keys: Vec<[u8; 32]>,
}

impl Claims {
    /// `claimed`: (column values, their commitment over the whole domain; values beyond the slice are
    /// zero, as midnight commits a committed instance column). The reference scheme ignores claims.
    pub fn new(params: &SizedParams, claimed: &[(&[Fr], G1Projective)]) -> Claims {
        if params.msm != Msm::Sized || claimed.is_empty() {
            return Claims { keys: Vec::new() };
        }
        let n = params.bases.lagrange.len();
        let keyed: Vec<([u8; 32], G1Projective)> = claimed
            .iter()
            .map(|(values, point)| {
                let mut column = values.to_vec();
                column.resize(n, Fr::ZERO);
                (
                    content_key(&params.bases.fingerprint, &le_bytes(&column)),
                    *point,
                )
            })
            .collect();
        let mut guard = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        let claims = guard.get_or_insert_with(HashMap::new);
        for (key, point) in &keyed {
            let entry = claims.entry(*key).or_insert((*point, 0));
            entry.0 = *point; // the latest claim wins; concurrent proofs of one content claim the same point
            entry.1 += 1;
        }
        Claims {
            keys: keyed.into_iter().map(|(key, _)| key).collect(),
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let mut guard = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(claims) = guard.as_mut() else { return };
        for key in &self.keys {
            if let Some(entry) = claims.get_mut(key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    claims.remove(key);
                }
            }
        }
    }
}

fn claim_get(key: &[u8; 32]) -> Option<G1Projective> {
    let guard = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref()?.get(key).map(|(point, _)| *point)
}

// ---------------------------------------------------------------------------------------- statistics

/// Process-wide counters of the scheme's calls, for the benchmarks' time split: calls, wall time, and
/// the process's CPU time during the calls (all threads: a call's own for a pinned, single-threaded
/// prover). Concurrent provers in one process add into the same counters.
struct Counter {
    calls: AtomicU64,
    wall_nanos: AtomicU64,
    cpu_nanos: AtomicU64,
}

/// CPU time of this process, all threads, in nanoseconds.
fn process_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given a valid pointer to.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Counter {
    const fn new() -> Self {
        Counter {
            calls: AtomicU64::new(0),
            wall_nanos: AtomicU64::new(0),
            cpu_nanos: AtomicU64::new(0),
        }
    }

    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let (start, cpu) = (Instant::now(), process_cpu_nanos());
        let out = f();
        let cpu = process_cpu_nanos().saturating_sub(cpu);
        self.wall_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.cpu_nanos.fetch_add(cpu, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// (calls, wall s, CPU s), zeroed with `reset`.
    fn take(&self, reset: bool) -> (u64, f64, f64) {
        let read = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        (
            read(&self.calls),
            read(&self.wall_nanos) as f64 * 1e-9,
            read(&self.cpu_nanos) as f64 * 1e-9,
        )
    }
}

static COMMIT_LAGRANGE: Counter = Counter::new();
static COMMIT: Counter = Counter::new();
static OPEN: Counter = Counter::new();
static CACHE_HITS: AtomicU64 = AtomicU64::new(0);
static CLAIM_HITS: AtomicU64 = AtomicU64::new(0);

/// (name, (calls, wall s, CPU s)) of `commit_lagrange`, `commit` and `multi_open`, and the cache hits
/// among the `commit_lagrange` calls and those served by a claim (as calls, 0 s). `reset` zeroes them.
pub fn stats(reset: bool) -> Vec<(&'static str, (u64, f64, f64))> {
    let read = |a: &AtomicU64| {
        if reset {
            a.swap(0, Ordering::Relaxed)
        } else {
            a.load(Ordering::Relaxed)
        }
    };
    let (hits, claimed) = (read(&CACHE_HITS), read(&CLAIM_HITS));
    vec![
        ("commit_lagrange", COMMIT_LAGRANGE.take(reset)),
        ("commit", COMMIT.take(reset)),
        ("multi_open", OPEN.take(reset)),
        ("cache_hits", (hits, 0.0, 0.0)),
        ("claimed", (claimed, 0.0, 0.0)),
    ]
}

// ------------------------------------------------------------------------------------------- scheme

/// KZG with sized MSMs for commitments; see the module documentation.
#[derive(Clone, Debug)]
pub struct SizedKzg;

impl SizedKzg {
    /// The commitment, and whether it came from the cache.
    fn commit_lagrange_sized(params: &SizedParams, values: &[Fr]) -> (G1Projective, bool) {
        let le = le_bytes(values);
        if !cacheable(values, params.bases.lagrange.len()) {
            return (msm_sized(&params.bases.lagrange, values, &le), false);
        }
        let key = content_key(&params.bases.fingerprint, &le);
        if let Some(point) = claim_get(&key) {
            CLAIM_HITS.fetch_add(1, Ordering::Relaxed);
            return (point, true);
        }
        if let Some(point) = cache_get(&key) {
            CACHE_HITS.fetch_add(1, Ordering::Relaxed);
            return (point, true);
        }
        let point = msm_sized(&params.bases.lagrange, values, &le);
        cache_put(key, point);
        (point, false)
    }
}

impl PolynomialCommitmentScheme<Fr> for SizedKzg {
    type Parameters = SizedParams;
    type VerifierParameters = ParamsVerifierKZG<E>;
    type Commitment = G1Projective;
    type VerificationGuard = SizedGuard;

    fn gen_params(k: u32) -> SizedParams {
        SizedParams::unsafe_setup(k, rand_core::OsRng, Msm::Sized)
    }

    fn get_verifier_params(params: &SizedParams) -> ParamsVerifierKZG<E> {
        params.kzg.verifier_params()
    }

    fn commit(params: &SizedParams, polynomial: &Polynomial<Fr, Coeff>) -> G1Projective {
        COMMIT.time(|| match params.msm {
            Msm::Reference => Kzg::commit(&params.kzg, polynomial),
            Msm::Sized => {
                let values: &[Fr] = polynomial;
                assert!(params.bases.monomial.len() >= values.len());
                msm_sized(&params.bases.monomial, values, &le_bytes(values))
            }
        })
    }

    fn commit_lagrange(params: &SizedParams, poly: &Polynomial<Fr, LagrangeCoeff>) -> G1Projective {
        COMMIT_LAGRANGE.time(|| match params.msm {
            Msm::Reference => Kzg::commit_lagrange(&params.kzg, poly),
            Msm::Sized => {
                let values: &[Fr] = poly;
                assert!(params.bases.lagrange.len() >= values.len());
                Self::commit_lagrange_sized(params, values).0
            }
        })
    }

    fn multi_open<T: Transcript>(
        params: &SizedParams,
        prover_query: &[ProverQuery<Fr>],
        transcript: &mut T,
    ) -> Result<(), Error>
    where
        Fr: Sampleable<T::Hash> + std::hash::Hash + Ord + Hashable<T::Hash>,
        G1Projective: Hashable<T::Hash>,
    {
        OPEN.time(|| Kzg::multi_open(&params.kzg, prover_query, transcript))
    }

    /// Not supported: midnight-proofs 0.8.3 keeps `VerifierQuery`'s fields crate-private, so the
    /// queries cannot be handed on to `KZGCommitmentScheme::multi_prepare`. Proofs of this scheme are
    /// standard KZG proofs: verify them with `KZGCommitmentScheme` (as lib.rs does).
    fn multi_prepare<'com, T: Transcript>(
        _verifier_query: &[VerifierQuery<'com, Fr, SizedKzg>],
        _transcript: &mut T,
    ) -> Result<SizedGuard, Error>
    where
        Fr: Sampleable<T::Hash> + std::hash::Hash + Ord + Hashable<T::Hash>,
        G1Projective: 'com + Hashable<T::Hash>,
    {
        Err(Error::OpeningError)
    }
}

/// A prepared proof: KZG's two MSMs, checked by KZG's pairing check.
#[derive(Debug)]
pub struct SizedGuard(pub DualMSM<E>);

impl Guard<Fr, SizedKzg> for SizedGuard {
    fn verify(self, params: &ParamsVerifierKZG<E>) -> Result<(), Error> {
        <DualMSM<E> as Guard<Fr, Kzg>>::verify(self.0, params)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    use super::*;

    const K: u32 = 9;

    fn poly<B>(values: Vec<Fr>) -> Polynomial<Fr, B> {
        let mut p = Polynomial::<Fr, B>::init(values.len());
        p.iter_mut().zip(values).for_each(|(p, v)| *p = v);
        p
    }

    fn params() -> SizedParams {
        SizedParams::unsafe_setup(K, ChaCha20Rng::seed_from_u64(1), Msm::Sized)
    }

    /// Columns of every scalar size the prover meets, with their names.
    fn columns(n: usize, rng: &mut ChaCha20Rng) -> Vec<(&'static str, Vec<Fr>)> {
        let small = |rng: &mut ChaCha20Rng, bits: u32| Fr::from(rng.next_u64() >> (64 - bits));
        let mut out: Vec<(&'static str, Vec<Fr>)> = vec![
            ("all zero", vec![Fr::ZERO; n]),
            ("ones", vec![Fr::ONE; n]),
            ("bits", (0..n).map(|_| small(rng, 1)).collect()),
            ("16-bit", (0..n).map(|_| small(rng, 16)).collect()),
            ("small negative", (0..n).map(|_| -small(rng, 12)).collect()),
            (
                "small ±",
                (0..n)
                    .map(|i| {
                        let v = small(rng, 15);
                        if i % 3 == 0 {
                            -v
                        } else {
                            v
                        }
                    })
                    .collect(),
            ),
            ("64-bit", (0..n).map(|_| Fr::from(rng.next_u64())).collect()),
            (
                "128-bit negative",
                (0..n)
                    .map(|_| -(Fr::from(rng.next_u64()) * Fr::from(1u64 << 63) * Fr::from(2)))
                    .collect(),
            ),
            ("full", (0..n).map(|_| Fr::random(&mut *rng)).collect()),
            ("p - 1", vec![-Fr::ONE; n]),
        ];
        // Mixed: every size in one column, zeros included, the full-size ones in the last rows as the
        // prover's blinding rows are.
        let mut mixed: Vec<Fr> = (0..n)
            .map(|i| match i % 6 {
                0 => Fr::ZERO,
                1 => small(rng, 1),
                2 => small(rng, 13),
                3 => -small(rng, 24),
                4 => Fr::from(rng.next_u64()),
                _ => -Fr::from(rng.next_u64()),
            })
            .collect();
        for v in mixed.iter_mut().rev().take(6) {
            *v = Fr::random(&mut *rng);
        }
        out.push(("mixed", mixed));
        // A short column (fewer values than bases) and a single nonzero value.
        out.push(("short", (0..n / 3).map(|_| small(rng, 16)).collect()));
        let mut single = vec![Fr::ZERO; n];
        single[n / 2] = Fr::from(12345);
        out.push(("single", single));
        out
    }

    #[test]
    fn sized_commitments_equal_midnight_kzg() {
        let params = params();
        let n = 1usize << K;
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for (name, values) in columns(n, &mut rng) {
            // The MSM itself (the scheme's calls below may be served from the cache).
            assert_eq!(
                msm_sized(&params.bases.lagrange, &values, &le_bytes(&values)),
                Kzg::commit_lagrange(params.kzg(), &poly::<LagrangeCoeff>(values.clone())),
                "msm_sized, {name}"
            );
            let lagrange = poly::<LagrangeCoeff>(values.clone());
            let coeff = poly::<Coeff>(values);
            assert_eq!(
                SizedKzg::commit_lagrange(&params, &lagrange),
                Kzg::commit_lagrange(params.kzg(), &lagrange),
                "commit_lagrange, {name}"
            );
            assert_eq!(
                SizedKzg::commit(&params, &coeff),
                Kzg::commit(params.kzg(), &coeff),
                "commit, {name}"
            );
            // The reference mode is midnight's own commitment.
            let reference = params.with_msm(Msm::Reference);
            assert_eq!(
                SizedKzg::commit_lagrange(&reference, &lagrange),
                Kzg::commit_lagrange(params.kzg(), &lagrange),
                "reference, {name}"
            );
        }
    }

    #[test]
    fn the_cache_returns_the_commitment_of_the_same_content_only() {
        let params = params();
        let n = 1usize << K;
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        // A committed-instance-like column: values, then zeros in the last (blinding) rows.
        let mut values: Vec<Fr> = (0..n).map(|_| Fr::from(rng.next_u64() >> 48)).collect();
        values[n - 4..].fill(Fr::ZERO);
        let mut changed = values.clone();
        changed[n - 5] += Fr::ONE;
        let commit = |p: &SizedParams, v: &[Fr]| SizedKzg::commit_lagrange_sized(p, v);
        let (first, _) = commit(&params, &values);
        assert_eq!(
            commit(&params, &values),
            (first, true),
            "the same column is not recomputed"
        );
        let expected = Kzg::commit_lagrange(params.kzg(), &poly::<LagrangeCoeff>(changed.clone()));
        assert_eq!(commit(&params, &changed), (expected, false));
        // Another SRS: the same values must not hit the first SRS's entry.
        let other = SizedParams::unsafe_setup(K, ChaCha20Rng::seed_from_u64(9), Msm::Sized);
        let expected = Kzg::commit_lagrange(other.kzg(), &poly::<LagrangeCoeff>(values.clone()));
        assert_eq!(commit(&other, &values), (expected, false));
        assert_ne!(expected, first);
        // A blinded column (nonzero last row) is recomputed, not cached.
        let mut blinded = values;
        blinded[n - 1] = Fr::random(&mut rng);
        let expected = Kzg::commit_lagrange(params.kzg(), &poly::<LagrangeCoeff>(blinded.clone()));
        assert_eq!(commit(&params, &blinded), (expected, false));
        assert_eq!(commit(&params, &blinded), (expected, false));
    }

    #[test]
    fn a_claim_serves_its_column_for_its_lifetime_only_and_never_enters_the_cache() {
        let params = params();
        let n = 1usize << K;
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        // Shorter than the domain: the claim is keyed on the zero-padded column, as midnight commits it.
        let values: Vec<Fr> = (0..n - 9).map(|_| Fr::from(rng.next_u64() >> 50)).collect();
        let mut padded = values.clone();
        padded.resize(n, Fr::ZERO);
        let truth = Kzg::commit_lagrange(params.kzg(), &poly::<LagrangeCoeff>(padded.clone()));
        let wrong = truth + G1Projective::generator();
        let commit = |p: &SizedParams, v: &[Fr]| SizedKzg::commit_lagrange_sized(p, v);
        {
            let _claims = Claims::new(&params, &[(&values, wrong)]);
            // Served as claimed, unchecked: a wrong claim only spoils the proof that makes it.
            assert_eq!(commit(&params, &padded), (wrong, true));
            let mut other = padded.clone();
            other[0] += Fr::ONE;
            assert!(
                !commit(&params, &other).1,
                "another column is not served by the claim"
            );
            // Nested claims of one content: the entry lives until the last one is dropped.
            let inner = Claims::new(&params, &[(&values, wrong)]);
            drop(inner);
            assert_eq!(commit(&params, &padded), (wrong, true));
        }
        // Gone with its Claims, and never cached: the true commitment is computed.
        assert_eq!(commit(&params, &padded), (truth, false));
        // The reference scheme ignores claims.
        let reference = params.with_msm(Msm::Reference);
        let _claims = Claims::new(&reference, &[(&values, wrong)]);
        assert_eq!(
            SizedKzg::commit_lagrange(&reference, &poly::<LagrangeCoeff>(padded)),
            truth
        );
    }

    #[test]
    fn downsized_params_commit_like_midnight() {
        let mut params = params();
        params.downsize(K - 2);
        let n = 1usize << (K - 2);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let values: Vec<Fr> = (0..n).map(|_| Fr::from(rng.next_u64() >> 40)).collect();
        let column = poly::<LagrangeCoeff>(values);
        assert_eq!(
            SizedKzg::commit_lagrange(&params, &column),
            Kzg::commit_lagrange(params.kzg(), &column)
        );
    }
}
