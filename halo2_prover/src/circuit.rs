//! One generic Halo2 circuit for every `Structure`: `configure_with_params` declares its columns, gates
//! and lookups; `synthesize` lays everything out in a single region at absolute rows.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
};

use ff::Field;
use midnight_proofs::{
    circuit::{Cell, Layouter, RegionIndex, SimpleFloorPlanner, Value},
    plonk::{
        Advice, Any, Circuit, Column, ConstraintSystem, Constraints, Error, Expression, Fixed,
        VirtualCells,
    },
    poly::Rotation,
};

use crate::{
    structure::{Expr, Kind, Structure},
    Fr,
};

/// What a synthesis pass needs to assign: keygen needs fixed values and copies, the prover only the
/// advice values, the mock prover everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Keygen,
    Prove,
    Mock,
}

/// The prover's private values: one vector per advice column, in the order of `Structure::columns`.
#[derive(Debug, Default)]
pub struct Witness {
    pub advice: Vec<Vec<Fr>>,
}

#[derive(Clone)]
pub struct GenericCircuit {
    pub structure: Arc<Structure>,
    pub witness: Option<Arc<Witness>>,
    pub mode: Mode,
    /// Mock prover only: a row at which to assign a zero so that its domain is exactly 2^k.
    pub mock_pad_row: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The Halo2 column of each IR column, by column position.
    columns: Vec<Column<Any>>,
}

/// Halo2 gate names are `&'static str`; intern them so re-configuring never leaks more than once per name.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&s) = names.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(s);
    s
}

fn lower(e: &Expr, cells: &mut VirtualCells<'_, Fr>, columns: &[Column<Any>]) -> Expression<Fr> {
    match e {
        Expr::Constant(c) => Expression::Constant(*c),
        Expr::Query { column, rotation } => cells.query_any(columns[*column], Rotation(*rotation)),
        Expr::Negated(a) => Expression::Negated(Box::new(lower(a, cells, columns))),
        Expr::Sum(a, b) => Expression::Sum(
            Box::new(lower(a, cells, columns)),
            Box::new(lower(b, cells, columns)),
        ),
        Expr::Product(a, b) => Expression::Product(
            Box::new(lower(a, cells, columns)),
            Box::new(lower(b, cells, columns)),
        ),
        Expr::Scaled(a, c) => Expression::Scaled(Box::new(lower(a, cells, columns)), *c),
    }
}

impl Circuit<Fr> for GenericCircuit {
    type Config = Config;
    type FloorPlanner = SimpleFloorPlanner;
    type Params = Arc<Structure>;

    fn without_witnesses(&self) -> Self {
        GenericCircuit {
            structure: self.structure.clone(),
            witness: None,
            mode: self.mode,
            mock_pad_row: None,
        }
    }

    fn params(&self) -> Arc<Structure> {
        self.structure.clone()
    }

    fn configure(meta: &mut ConstraintSystem<Fr>) -> Config {
        Self::configure_with_params(meta, Arc::default())
    }

    fn configure_with_params(meta: &mut ConstraintSystem<Fr>, s: Arc<Structure>) -> Config {
        // Selectors are plain fixed columns multiplied into each constraint: the IR gives them as 0/1
        // values, and fixed columns (unlike Halo2 simple selectors) may also switch lookups on.
        let mut columns: Vec<Option<Column<Any>>> = s
            .columns
            .iter()
            .map(|c| match c.kind {
                Kind::Advice => Some(meta.advice_column().into()),
                Kind::Fixed | Kind::Selector | Kind::Table => Some(meta.fixed_column().into()),
                Kind::Instance | Kind::Committed => None,
            })
            .collect();
        for &position in &s.instance_order {
            columns[position] = Some(meta.instance_column().into());
        }
        let columns: Vec<Column<Any>> = columns
            .into_iter()
            .map(|c| c.expect("every column declared"))
            .collect();

        for (position, &enabled) in s.equality.iter().enumerate() {
            if enabled {
                meta.enable_equality(columns[position]);
            }
        }

        for gate in &s.gates {
            meta.create_gate(intern(&gate.name), |cells| {
                let selector = cells.query_any(columns[gate.selector], Rotation::cur());
                Constraints::without_selector(
                    gate.polys
                        .iter()
                        .map(|(name, poly)| {
                            (
                                name.clone(),
                                selector.clone() * lower(poly, cells, &columns),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }

        for lookup in &s.lookups {
            // Always-on lookups (no selector) look their plain advice column up on every usable row:
            // one degree less for the lookup argument (midnight: max(4, 2 + input + table degree)).
            meta.lookup_any(&lookup.name, |cells| {
                let selector = lookup
                    .selector
                    .map(|position| cells.query_any(columns[position], Rotation::cur()));
                lookup
                    .inputs
                    .iter()
                    .zip(&lookup.table)
                    .map(|(input, &table)| {
                        let input = lower(input, cells, &columns);
                        (
                            match &selector {
                                Some(selector) => selector.clone() * input,
                                None => input,
                            },
                            cells.query_any(columns[table], Rotation::cur()),
                        )
                    })
                    .collect()
            });
        }

        Config { columns }
    }

    fn synthesize(&self, config: Config, mut layouter: impl Layouter<Fr>) -> Result<(), Error> {
        let s = &*self.structure;
        let mut pass = 0;
        layouter.assign_region(
            || s.name.clone(),
            |mut region| {
                // SimpleFloorPlanner first runs the closure to measure the region's shape, which only
                // matters for placing later regions; there are none, so skip that pass.
                pass += 1;
                if pass == 1 {
                    return Ok(());
                }

                if self.mode == Mode::Mock {
                    // Failures then name the circuit's columns instead of Halo2 column indices.
                    for (position, c) in s.columns.iter().enumerate() {
                        region.name_column(
                            || format!("{}:{}", format!("{:?}", c.kind).to_lowercase(), c.name),
                            config.columns[position],
                        );
                    }
                }

                if self.mode != Mode::Prove {
                    for (position, values) in s.fixed.iter().enumerate() {
                        let Some(values) = values else { continue };
                        let column = Column::<Fixed>::try_from(config.columns[position])
                            .expect("fixed column");
                        // Every row the circuit uses gets a value, so the mock prover's copy check never
                        // compares an assigned zero with an unassigned cell.
                        let len = values.len().max(s.rows);
                        for row in 0..len {
                            let v = values.get(row).copied().unwrap_or_default();
                            region.assign_fixed(|| "", column, row, || Value::known(v))?;
                        }
                    }
                }

                if let Some(witness) = &self.witness {
                    for (position, values) in s.columns_of(Kind::Advice).zip(&witness.advice) {
                        let column = Column::<Advice>::try_from(config.columns[position])
                            .expect("advice column");
                        for row in 0..s.rows {
                            let v = values.get(row).copied().unwrap_or_default();
                            region.assign_advice(|| "", column, row, || Value::known(v))?;
                        }
                    }
                }

                if let Some(row) = self.mock_pad_row {
                    if let Some(position) =
                        (0..s.columns.len()).find(|&p| s.columns[p].kind.is_fixed())
                    {
                        let column = Column::<Fixed>::try_from(config.columns[position])
                            .expect("fixed column");
                        region.assign_fixed(
                            || "domain size",
                            column,
                            row,
                            || Value::known(Fr::ZERO),
                        )?;
                    } else if let Some(position) = s.columns_of(Kind::Advice).next() {
                        let column = Column::<Advice>::try_from(config.columns[position])
                            .expect("advice column");
                        region.assign_advice(
                            || "domain size",
                            column,
                            row,
                            || Value::known(Fr::ZERO),
                        )?;
                    }
                }

                if self.mode != Mode::Prove {
                    // One region starting at row 0: region offsets are absolute rows, for instance
                    // columns too.
                    let cell = |position: usize, row: usize| Cell {
                        region_index: RegionIndex::from(0),
                        row_offset: row,
                        column: config.columns[position],
                    };
                    for &[ca, ra, cb, rb] in &s.copies {
                        region.constrain_equal(cell(ca, ra), cell(cb, rb))?;
                    }
                }
                Ok(())
            },
        )
    }
}
