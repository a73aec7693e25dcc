//! The circuit description read from `circuit_compiler.serialize` (format `jaxapex-circuit/1`):
//! columns, gates, lookups, fixed values and copies, validated once and shared by keygen, proving and the
//! mock prover.

use std::collections::HashMap;

use ff::{Field, PrimeField};
use num_bigint::{BigInt, BigUint, Sign};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::{BackendError, Fr};

pub const FORMAT: &str = "jaxapex-circuit/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Advice,
    Fixed,
    Selector,
    Instance,
    Committed,
    Table,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, BackendError> {
        Ok(match s {
            "advice" => Kind::Advice,
            "fixed" => Kind::Fixed,
            "selector" => Kind::Selector,
            "instance" => Kind::Instance,
            "committed" => Kind::Committed,
            "table" => Kind::Table,
            other => {
                return Err(BackendError::invalid(format!(
                    "unknown column kind {other:?}"
                )))
            }
        })
    }

    /// Fixed, selector and table columns are all Halo2 fixed columns.
    pub fn is_fixed(self) -> bool {
        matches!(self, Kind::Fixed | Kind::Selector | Kind::Table)
    }
}

#[derive(Clone, Debug)]
pub struct ColumnSpec {
    pub kind: Kind,
    pub index: usize,
    pub name: String,
}

/// An expression over column positions (indices into `Structure::columns`).
#[derive(Clone, Debug)]
pub enum Expr {
    Constant(Fr),
    Query { column: usize, rotation: i32 },
    Negated(Box<Expr>),
    Sum(Box<Expr>, Box<Expr>),
    Product(Box<Expr>, Box<Expr>),
    Scaled(Box<Expr>, Fr),
}

#[derive(Clone, Debug)]
pub struct GateSpec {
    pub name: String,
    pub selector: usize,
    pub polys: Vec<(String, Expr)>,
}

#[derive(Clone, Debug)]
pub struct LookupSpec {
    pub name: String,
    /// `None`: always on -- every input is an advice column at rotation 0 that must hold a table value
    /// on every usable row (the lookup argument itself skips the blinding rows).
    pub selector: Option<usize>,
    pub inputs: Vec<Expr>,
    pub table: Vec<usize>,
}

/// One copy constraint: (column position, row) == (column position, row).
pub type CopySpec = [usize; 4];

#[derive(Clone, Debug, Default)]
pub struct Structure {
    pub name: String,
    pub k: u32,
    pub rows: usize,
    pub columns: Vec<ColumnSpec>,
    pub gates: Vec<GateSpec>,
    pub lookups: Vec<LookupSpec>,
    /// Values of every fixed/selector/table column by column position (`None` for the others, and for
    /// all columns when only the shape is known, as on the verifier side).
    pub fixed: Vec<Option<Vec<Fr>>>,
    pub copies: Vec<CopySpec>,
    /// Column positions of the instance columns in Halo2 order: committed (by index), then public.
    pub instance_order: Vec<usize>,
    pub num_committed: usize,
    /// Columns that take part in a copy constraint.
    pub equality: Vec<bool>,
    by_name: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct RawColumn {
    kind: String,
    index: usize,
    name: String,
}

#[derive(Deserialize)]
struct RawPoly {
    name: String,
    expr: Value,
}

#[derive(Deserialize)]
struct RawGate {
    name: String,
    selector: usize,
    polys: Vec<RawPoly>,
}

#[derive(Deserialize)]
struct RawLookup {
    name: String,
    selector: Option<usize>,
    inputs: Vec<Value>,
    table: Vec<usize>,
}

#[derive(Deserialize)]
struct RawStructure {
    format: String,
    modulus: String,
    name: String,
    k: u32,
    rows: usize,
    columns: Vec<RawColumn>,
    gates: Vec<RawGate>,
    lookups: Vec<RawLookup>,
}

/// The scalar field modulus as a big integer.
pub fn modulus() -> BigUint {
    BigUint::parse_bytes(Fr::MODULUS.trim_start_matches("0x").as_bytes(), 16)
        .expect("modulus constant")
}

/// A signed decimal integer reduced mod p.
pub fn field_from_decimal(s: &str) -> Result<Fr, BackendError> {
    if let Ok(v) = s.parse::<i64>() {
        return Ok(field_from_i64(v));
    }
    let v = BigInt::parse_bytes(s.as_bytes(), 10)
        .ok_or_else(|| BackendError::invalid(format!("constant {s:?} is not a decimal integer")))?;
    let p = BigInt::from_biguint(Sign::Plus, modulus());
    let reduced = ((v % &p) + &p) % &p;
    let (_, digits) = reduced.to_bytes_le();
    let mut repr = [0u8; 32];
    repr[..digits.len()].copy_from_slice(&digits);
    Ok(Fr::from_repr(repr).expect("reduced value is canonical"))
}

#[inline]
pub fn field_from_i64(v: i64) -> Fr {
    if v >= 0 {
        Fr::from(v as u64)
    } else {
        -Fr::from(v.unsigned_abs())
    }
}

/// Layout version of the `"i64+u256"` encoding (the first u64 of its bytes).
pub const SPARSE_VERSION: u64 = 1;
const SPARSE_HEADER: usize = 24;

/// Decode one column of values (layouts documented in `circuit_compiler/serialize.py`):
/// `"i64"` (LE signed, `v < 0` meaning `p + v`), `"u256"` (32-byte LE canonical integers in `[0, p)`) or
/// `"i64+u256"` (header `u64 version = 1, u64 n, u64 m`; n i64 as in `"i64"`, 0 where a large value goes;
/// m strictly increasing u64 rows < n; m 32-byte LE canonical values for those rows).
pub fn decode_values(encoding: &str, data: &[u8], what: &str) -> Result<Vec<Fr>, BackendError> {
    match encoding {
        "i64" => decode_i64(data, what),
        "u256" => decode_u256(data, what, |i| i),
        "i64+u256" => decode_sparse(data, what),
        other => Err(BackendError::invalid(format!(
            "{what}: unknown value encoding {other:?}"
        ))),
    }
}

fn decode_i64(data: &[u8], what: &str) -> Result<Vec<Fr>, BackendError> {
    if !data.len().is_multiple_of(8) {
        return Err(BackendError::invalid(format!(
            "{what}: i64 data of {} bytes is not a multiple of 8",
            data.len()
        )));
    }
    Ok(data
        .par_chunks_exact(8)
        .map(|b| field_from_i64(i64::from_le_bytes(b.try_into().unwrap())))
        .collect())
}

/// 32-byte LE canonical values; `row_of(i)` names the row of the i-th one in errors.
fn decode_u256(
    data: &[u8],
    what: &str,
    row_of: impl Fn(usize) -> usize + Sync,
) -> Result<Vec<Fr>, BackendError> {
    if !data.len().is_multiple_of(32) {
        return Err(BackendError::invalid(format!(
            "{what}: u256 data of {} bytes is not a multiple of 32",
            data.len()
        )));
    }
    data.par_chunks_exact(32)
        .enumerate()
        .map(|(i, b)| {
            Option::<Fr>::from(Fr::from_repr(b.try_into().unwrap())).ok_or_else(|| {
                BackendError::invalid(format!(
                    "{what}: u256 value at row {} is not < p",
                    row_of(i)
                ))
            })
        })
        .collect()
}

fn read_u64(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

fn decode_sparse(data: &[u8], what: &str) -> Result<Vec<Fr>, BackendError> {
    let invalid = |msg: String| BackendError::invalid(format!("{what}: i64+u256 {msg}"));
    if data.len() < SPARSE_HEADER {
        return Err(invalid(format!(
            "data of {} bytes is shorter than its {SPARSE_HEADER}-byte header",
            data.len()
        )));
    }
    let (version, n, m) = (read_u64(data, 0), read_u64(data, 8), read_u64(data, 16));
    if version != SPARSE_VERSION {
        return Err(invalid(format!(
            "layout version {version}, expected {SPARSE_VERSION}"
        )));
    }
    // u128: a hostile header must not overflow the length check
    let expected = SPARSE_HEADER as u128 + 8 * n as u128 + 40 * m as u128;
    if data.len() as u128 != expected {
        return Err(invalid(format!(
            "data of {} bytes: {n} rows and {m} large values need {expected}",
            data.len()
        )));
    }
    let (n, m) = (n as usize, m as usize);
    let rows_at = SPARSE_HEADER + 8 * n;
    let rows: Vec<usize> = (0..m)
        .map(|i| read_u64(data, rows_at + 8 * i) as usize)
        .collect();
    if let Some(&row) = rows.iter().find(|&&r| r >= n) {
        return Err(invalid(format!(
            "large value at row {row}, beyond its {n} rows"
        )));
    }
    if rows.windows(2).any(|w| w[1] <= w[0]) {
        return Err(invalid(
            "the rows of its large values are not strictly increasing".to_string(),
        ));
    }
    let small = &data[SPARSE_HEADER..rows_at];
    if let Some(&row) = rows.iter().find(|&&r| small[8 * r..8 * r + 8] != [0u8; 8]) {
        return Err(invalid(format!(
            "row {row} holds a large value but its i64 slot is not 0"
        )));
    }
    let mut values = decode_i64(small, what)?;
    let large = decode_u256(&data[rows_at + 8 * m..], what, |i| rows[i])?;
    for (row, value) in rows.iter().zip(large) {
        values[*row] = value;
    }
    Ok(values)
}

impl Structure {
    /// Parse and validate the structure JSON (no values yet).
    pub fn from_json(text: &str) -> Result<Structure, BackendError> {
        let mut de = serde_json::Deserializer::from_str(text);
        de.disable_recursion_limit();
        let raw = RawStructure::deserialize(&mut de)
            .map_err(|e| BackendError::invalid(format!("circuit structure JSON: {e}")))?;
        if raw.format != FORMAT {
            return Err(BackendError::invalid(format!(
                "circuit structure: format {:?}, expected {FORMAT:?}",
                raw.format
            )));
        }
        let p = BigUint::parse_bytes(raw.modulus.as_bytes(), 10);
        if p.as_ref() != Some(&modulus()) {
            return Err(BackendError::invalid(format!(
                "circuit {:?} is over modulus {}, but this backend proves over the BLS12-381 scalar field {}",
                raw.name,
                raw.modulus,
                modulus()
            )));
        }
        if raw.k < 1 || raw.k > Fr::S {
            return Err(BackendError::invalid(format!(
                "circuit {:?}: k = {} out of range [1, {}]",
                raw.name,
                raw.k,
                Fr::S
            )));
        }

        let mut columns = Vec::with_capacity(raw.columns.len());
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for (position, c) in raw.columns.into_iter().enumerate() {
            let kind = Kind::parse(&c.kind)?;
            if by_key.insert((kind, c.index), position).is_some() {
                return Err(BackendError::invalid(format!(
                    "duplicate column {}:{}",
                    c.kind, c.index
                )));
            }
            if by_name.insert(c.name.clone(), position).is_some() {
                return Err(BackendError::invalid(format!(
                    "duplicate column name {:?}",
                    c.name
                )));
            }
            columns.push(ColumnSpec {
                kind,
                index: c.index,
                name: c.name,
            });
        }

        let check_kind = |position: usize, want: &[Kind], what: &str| -> Result<(), BackendError> {
            match columns.get(position) {
                Some(c) if want.contains(&c.kind) => Ok(()),
                Some(c) => Err(BackendError::invalid(format!(
                    "{what}: column {:?} has kind {:?}",
                    c.name, c.kind
                ))),
                None => Err(BackendError::invalid(format!(
                    "{what}: no column at position {position}"
                ))),
            }
        };

        let mut gates = Vec::with_capacity(raw.gates.len());
        for g in raw.gates {
            let what = format!("gate {:?}", g.name);
            check_kind(g.selector, &[Kind::Selector], &format!("{what} selector"))?;
            if g.polys.is_empty() {
                return Err(BackendError::invalid(format!("{what} has no constraints")));
            }
            let polys = g
                .polys
                .into_iter()
                .map(|p| {
                    let e = parse_expr(&p.expr, &by_key, &format!("{what}/{}", p.name))?;
                    Ok((p.name, e))
                })
                .collect::<Result<Vec<_>, BackendError>>()?;
            gates.push(GateSpec {
                name: g.name,
                selector: g.selector,
                polys,
            });
        }

        let mut lookups = Vec::with_capacity(raw.lookups.len());
        for lk in raw.lookups {
            let what = format!("lookup {:?}", lk.name);
            if let Some(selector) = lk.selector {
                check_kind(selector, &[Kind::Selector], &format!("{what} selector"))?;
            }
            if lk.inputs.is_empty() || lk.inputs.len() != lk.table.len() {
                return Err(BackendError::invalid(format!(
                    "{what}: {} inputs for {} table columns",
                    lk.inputs.len(),
                    lk.table.len()
                )));
            }
            for &t in &lk.table {
                check_kind(t, &[Kind::Table], &format!("{what} table"))?;
            }
            let inputs = lk
                .inputs
                .iter()
                .enumerate()
                .map(|(i, e)| parse_expr(e, &by_key, &format!("{what} input {i}")))
                .collect::<Result<Vec<_>, _>>()?;
            if lk.selector.is_none() {
                for (i, input) in inputs.iter().enumerate() {
                    let plain = matches!(input, Expr::Query { column, rotation: 0 }
                        if columns[*column].kind == Kind::Advice);
                    if !plain {
                        return Err(BackendError::invalid(format!(
                            "{what} input {i}: a lookup without a selector may only look up an advice \
                             column at rotation 0"
                        )));
                    }
                }
            }
            lookups.push(LookupSpec {
                name: lk.name,
                selector: lk.selector,
                inputs,
                table: lk.table,
            });
        }

        // Halo2 wants the committed instance columns first.
        let mut committed: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].kind == Kind::Committed)
            .collect();
        let mut public: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].kind == Kind::Instance)
            .collect();
        committed.sort_by_key(|&i| columns[i].index);
        public.sort_by_key(|&i| columns[i].index);
        let num_committed = committed.len();
        let instance_order = committed.into_iter().chain(public).collect();

        let n = columns.len();
        Ok(Structure {
            name: raw.name,
            k: raw.k,
            rows: raw.rows,
            columns,
            gates,
            lookups,
            fixed: vec![None; n],
            copies: vec![],
            instance_order,
            num_committed,
            equality: vec![false; n],
            by_name,
        })
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Rows Halo2 lets a circuit use, given the blinding rows its constraint system needs.
    pub fn check_rows(&self, usable_rows: usize) -> Result<(), BackendError> {
        if self.rows > usable_rows {
            return Err(BackendError::invalid(format!(
                "circuit {:?}: {} rows do not fit k = {} ({} usable rows)",
                self.name, self.rows, self.k, usable_rows
            )));
        }
        for (position, values) in self.fixed.iter().enumerate() {
            if let Some(values) = values {
                if let Some(last) = values.iter().rposition(|v| !bool::from(v.is_zero())) {
                    if last >= usable_rows {
                        return Err(BackendError::invalid(format!(
                            "circuit {:?}: column {:?} has a non-zero value at row {last}, beyond the {usable_rows} usable rows of k = {}",
                            self.name, self.columns[position].name, self.k
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Set the values of a fixed, selector or table column.
    pub fn set_fixed(&mut self, name: &str, values: Vec<Fr>) -> Result<(), BackendError> {
        let position = self.position(name).ok_or_else(|| {
            BackendError::invalid(format!("circuit {:?} has no column {name:?}", self.name))
        })?;
        if !self.columns[position].kind.is_fixed() {
            return Err(BackendError::invalid(format!(
                "column {name:?} is {:?}, not a fixed/selector/table column",
                self.columns[position].kind
            )));
        }
        if values.len() > (1usize << self.k) {
            return Err(BackendError::invalid(format!(
                "column {name:?}: {} values do not fit 2^{} rows",
                values.len(),
                self.k
            )));
        }
        self.fixed[position] = Some(values);
        Ok(())
    }

    /// Set the copy constraints from an i64 array of shape (m, 4), enabling equality on their columns.
    pub fn set_copies(&mut self, data: &[u8]) -> Result<(), BackendError> {
        if !data.len().is_multiple_of(32) {
            return Err(BackendError::invalid(format!(
                "copies: {} bytes is not a multiple of 4 x int64",
                data.len()
            )));
        }
        let mut copies = Vec::with_capacity(data.len() / 32);
        let mut equality = vec![false; self.columns.len()];
        for (i, chunk) in data.chunks_exact(32).enumerate() {
            let v: Vec<i64> = chunk
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let mut copy = [0usize; 4];
            for side in 0..2 {
                let (col, row) = (v[2 * side], v[2 * side + 1]);
                let column = usize::try_from(col)
                    .ok()
                    .and_then(|c| self.columns.get(c))
                    .ok_or_else(|| {
                        BackendError::invalid(format!("copy {i}: no column at position {col}"))
                    })?;
                if matches!(column.kind, Kind::Selector | Kind::Table) {
                    return Err(BackendError::invalid(format!(
                        "copy {i}: column {:?} is a {:?} column, which takes no copies",
                        column.name, column.kind
                    )));
                }
                if row < 0 || row as usize >= self.rows {
                    return Err(BackendError::invalid(format!(
                        "copy {i}: row {row} of column {:?} outside [0, {})",
                        column.name, self.rows
                    )));
                }
                copy[2 * side] = col as usize;
                copy[2 * side + 1] = row as usize;
                equality[col as usize] = true;
            }
            copies.push(copy);
        }
        self.copies = copies;
        self.equality = equality;
        Ok(())
    }

    /// Positions of the equality-enabled columns (they shape the permutation argument, so the verifying
    /// key records them: the verifier's structure JSON carries no copies).
    pub fn equality_positions(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&p| self.equality[p])
            .collect()
    }

    pub fn set_equality_positions(&mut self, positions: &[usize]) -> Result<(), BackendError> {
        let mut equality = vec![false; self.columns.len()];
        for &p in positions {
            match self.columns.get(p) {
                Some(c) if !matches!(c.kind, Kind::Selector | Kind::Table) => equality[p] = true,
                _ => {
                    return Err(BackendError::invalid(format!(
                        "equality column position {p} is not a column that takes copies"
                    )))
                }
            }
        }
        self.equality = equality;
        Ok(())
    }

    /// Every fixed/selector/table column must have values before keygen.
    pub fn check_complete(&self) -> Result<(), BackendError> {
        for (c, values) in self.columns.iter().zip(&self.fixed) {
            if c.kind.is_fixed() && values.is_none() {
                return Err(BackendError::invalid(format!(
                    "circuit {:?}: no values for {:?} column {:?}",
                    self.name, c.kind, c.name
                )));
            }
        }
        Ok(())
    }

    pub fn columns_of(&self, kind: Kind) -> impl Iterator<Item = usize> + '_ {
        (0..self.columns.len()).filter(move |&i| self.columns[i].kind == kind)
    }
}

fn parse_expr(
    v: &Value,
    columns: &HashMap<(Kind, usize), usize>,
    what: &str,
) -> Result<Expr, BackendError> {
    let bad = |msg: &str| BackendError::invalid(format!("{what}: {msg}: {}", truncate(v)));
    let items = v
        .as_array()
        .ok_or_else(|| bad("expression is not a list"))?;
    let tag = items
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| bad("expression has no tag"))?;
    let arg = |i: usize| items.get(i).ok_or_else(|| bad("missing operand"));
    let sub = |i: usize| -> Result<Box<Expr>, BackendError> {
        Ok(Box::new(parse_expr(arg(i)?, columns, what)?))
    };
    let constant = |i: usize| -> Result<Fr, BackendError> {
        field_from_decimal(
            arg(i)?
                .as_str()
                .ok_or_else(|| bad("constant is not a decimal string"))?,
        )
    };
    Ok(match tag {
        "const" => Expr::Constant(constant(1)?),
        "query" => {
            let kind = Kind::parse(
                arg(1)?
                    .as_str()
                    .ok_or_else(|| bad("query kind is not a string"))?,
            )?;
            let index = arg(2)?
                .as_u64()
                .ok_or_else(|| bad("query index is not an integer"))?
                as usize;
            let rotation = arg(3)?
                .as_i64()
                .and_then(|r| i32::try_from(r).ok())
                .ok_or_else(|| bad("bad rotation"))?;
            let column = *columns
                .get(&(kind, index))
                .ok_or_else(|| bad("query of an undeclared column"))?;
            Expr::Query { column, rotation }
        }
        "neg" => Expr::Negated(sub(1)?),
        "sum" => Expr::Sum(sub(1)?, sub(2)?),
        "prod" => Expr::Product(sub(1)?, sub(2)?),
        "scale" => Expr::Scaled(sub(1)?, constant(2)?),
        _ => return Err(bad("unknown expression tag")),
    })
}

fn truncate(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}
