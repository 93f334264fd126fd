//! The one column layout every circuit shares (spec §3.11) and the gadgets built on it:
//! witnesses, instance copies, constants, Poseidon, lookup range checks and the checked
//! subtraction that makes `a ≤ b` sound on bounded integers (§3.10.3).

use halo2_gadgets::{
    poseidon::{
        Hash, Pow5Chip, Pow5Config,
        primitives::{ConstantLength, P128Pow5T3},
    },
    utilities::lookup_range_check::{LookupRangeCheck, LookupRangeCheckConfig},
};
use halo2_proofs::{
    circuit::{AssignedCell, Layouter, Value},
    pasta::Fp,
    plonk::{
        Advice, Column, ConstraintSystem, Constraints, Error, Fixed, Instance, Selector,
        TableColumn,
    },
    poly::Rotation,
};

/// Word size of the range-check lookup table (values `0..1024`).
pub const RANGE_K: usize = 10;

type Cell = AssignedCell<Fp, Fp>;

/// Columns, chips and selectors of one circuit.
#[derive(Clone, Debug)]
pub struct Config {
    /// `a0..a2`: Poseidon state; `lhs`, `rhs`, `diff` of the subtraction gate.
    state: [Column<Advice>; 3],
    /// `a4`: free witnesses, instance copies, the range check's running sum.
    free: Column<Advice>,
    instance: Column<Instance>,
    poseidon: Pow5Config<Fp, 3, 2>,
    /// Present in circuits that compare integers.
    range: Option<(LookupRangeCheckConfig<Fp, RANGE_K>, TableColumn)>,
    q_sub: Selector,
}

impl Config {
    /// Allocates the layout; `with_range` adds the 1024-row lookup table (then `k ≥ 11`).
    pub fn configure(meta: &mut ConstraintSystem<Fp>, with_range: bool) -> Self {
        let state = [
            meta.advice_column(),
            meta.advice_column(),
            meta.advice_column(),
        ];
        let partial_sbox = meta.advice_column();
        let free = meta.advice_column();
        let rc_a = [
            meta.fixed_column(),
            meta.fixed_column(),
            meta.fixed_column(),
        ];
        let rc_b = [
            meta.fixed_column(),
            meta.fixed_column(),
            meta.fixed_column(),
        ];
        let constants: Column<Fixed> = meta.fixed_column();
        meta.enable_constant(constants);
        let instance = meta.instance_column();
        meta.enable_equality(instance);
        meta.enable_equality(free);
        for c in state {
            meta.enable_equality(c);
        }
        let poseidon = Pow5Chip::configure::<P128Pow5T3>(meta, state, partial_sbox, rc_a, rc_b);
        let range = with_range.then(|| {
            let table = meta.lookup_table_column();
            let cfg =
                <LookupRangeCheckConfig<Fp, RANGE_K> as LookupRangeCheck<Fp, RANGE_K>>::configure(
                    meta, free, table,
                );
            (cfg, table)
        });
        let q_sub = meta.selector();
        meta.create_gate("checked subtraction", |meta| {
            let q = meta.query_selector(q_sub);
            let lhs = meta.query_advice(state[0], Rotation::cur());
            let rhs = meta.query_advice(state[1], Rotation::cur());
            let diff = meta.query_advice(state[2], Rotation::cur());
            Constraints::with_selector(q, Some(lhs - rhs - diff))
        });
        Self {
            state,
            free,
            instance,
            poseidon,
            range,
            q_sub,
        }
    }

    /// Fills the lookup table with `0..2^RANGE_K` (the gadget leaves this to its user).
    pub fn load_table(&self, layouter: &mut impl Layouter<Fp>) -> Result<(), Error> {
        let Some((_, table)) = self.range else {
            return Ok(());
        };
        layouter.assign_table(
            || "range table",
            |mut t| {
                for i in 0..(1usize << RANGE_K) {
                    t.assign_cell(|| "word", table, i, || Value::known(Fp::from(i as u64)))?;
                }
                Ok(())
            },
        )
    }

    /// A private witness.
    pub fn witness(&self, layouter: &mut impl Layouter<Fp>, v: Value<Fp>) -> Result<Cell, Error> {
        layouter.assign_region(
            || "witness",
            |mut r| r.assign_advice(|| "w", self.free, 0, || v),
        )
    }

    /// A fixed value (domain tags).
    pub fn constant(&self, layouter: &mut impl Layouter<Fp>, c: Fp) -> Result<Cell, Error> {
        layouter.assign_region(
            || "constant",
            |mut r| r.assign_advice_from_constant(|| "c", self.free, 0, c),
        )
    }

    /// The public input at instance `row`, copied into advice.
    pub fn public(&self, layouter: &mut impl Layouter<Fp>, row: usize) -> Result<Cell, Error> {
        layouter.assign_region(
            || format!("public {row}"),
            |mut r| r.assign_advice_from_instance(|| "p", self.instance, row, self.free, 0),
        )
    }

    /// Constrains `cell` to equal the public input at instance `row`.
    pub fn expose(
        &self,
        layouter: &mut impl Layouter<Fp>,
        cell: &Cell,
        row: usize,
    ) -> Result<(), Error> {
        layouter.constrain_instance(cell.cell(), self.instance, row)
    }

    /// `Poseidon_CL<L>(message)`.
    pub fn hash<const L: usize>(
        &self,
        layouter: &mut impl Layouter<Fp>,
        message: [Cell; L],
    ) -> Result<Cell, Error> {
        let chip = Pow5Chip::construct(self.poseidon.clone());
        let h = Hash::<_, _, P128Pow5T3, ConstantLength<L>, 3, 2>::init(
            chip,
            layouter.namespace(|| "poseidon init"),
        )?;
        h.hash(layouter.namespace(|| "poseidon"), message)
    }

    fn range_cfg(&self) -> Result<&LookupRangeCheckConfig<Fp, RANGE_K>, Error> {
        // A circuit configured without the table never calls a range check; reaching this
        // is a programming error, reported as a synthesis failure rather than a panic.
        self.range.as_ref().map(|(c, _)| c).ok_or(Error::Synthesis)
    }

    /// Constrains `x < 2^64`: six 10-bit words, then the remaining running sum to 4 bits.
    pub fn range_u64(&self, layouter: &mut impl Layouter<Fp>, x: &Cell) -> Result<(), Error> {
        let cfg = self.range_cfg()?;
        let zs = cfg.copy_check(layouter.namespace(|| "u64 words"), x.clone(), 6, false)?;
        let top = zs.last().cloned().ok_or(Error::Synthesis)?;
        cfg.copy_short_check(layouter.namespace(|| "u64 top bits"), top, 4)
    }

    /// Constrains `x < 2^bits` for `bits ≤ 10`.
    pub fn range_bits(
        &self,
        layouter: &mut impl Layouter<Fp>,
        x: &Cell,
        bits: usize,
    ) -> Result<(), Error> {
        let cfg = self.range_cfg()?;
        match bits {
            RANGE_K => cfg
                .copy_check(layouter.namespace(|| "one word"), x.clone(), 1, true)
                .map(|_| ()),
            1..RANGE_K => cfg.copy_short_check(layouter.namespace(|| "short"), x.clone(), bits),
            _ => Err(Error::Synthesis),
        }
    }

    /// `d = lhs − rhs` as a constrained cell. On its own this proves nothing about order;
    /// range-checking `d` (with both operands range-checked) is what makes `rhs ≤ lhs`.
    pub fn sub(
        &self,
        layouter: &mut impl Layouter<Fp>,
        lhs: &Cell,
        rhs: &Cell,
    ) -> Result<Cell, Error> {
        layouter.assign_region(
            || "lhs - rhs",
            |mut r| {
                self.q_sub.enable(&mut r, 0)?;
                let l = lhs.copy_advice(|| "lhs", &mut r, self.state[0], 0)?;
                let rr = rhs.copy_advice(|| "rhs", &mut r, self.state[1], 0)?;
                let d = l.value().zip(rr.value()).map(|(a, b)| *a - *b);
                r.assign_advice(|| "diff", self.state[2], 0, || d)
            },
        )
    }

    /// `a ≤ b` for `a, b` already constrained below `2^64`: `d = b − a` must be below
    /// `2^64` too, which a wrapped difference (`p − (a − b)`, about `2^254`) never is.
    pub fn assert_le_u64(
        &self,
        layouter: &mut impl Layouter<Fp>,
        a: &Cell,
        b: &Cell,
    ) -> Result<(), Error> {
        let d = self.sub(layouter, b, a)?;
        self.range_u64(layouter, &d)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use halo2_proofs::{
        circuit::SimpleFloorPlanner,
        dev::MockProver,
        plonk::{Circuit, Error},
    };

    use super::*;
    use crate::encoding::{fe_to_bytes, poseidon};

    /// `Poseidon_CL<L>` of witnessed inputs, exposed as instance 0: the gadget alone.
    struct HashCircuit<const L: usize>([Value<Fp>; L]);

    impl<const L: usize> Circuit<Fp> for HashCircuit<L> {
        type Config = Config;
        type FloorPlanner = SimpleFloorPlanner;

        fn without_witnesses(&self) -> Self {
            Self([Value::unknown(); L])
        }

        fn configure(meta: &mut ConstraintSystem<Fp>) -> Config {
            Config::configure(meta, false)
        }

        fn synthesize(&self, c: Config, mut l: impl Layouter<Fp>) -> Result<(), Error> {
            let mut cells = Vec::with_capacity(L);
            for v in self.0 {
                cells.push(c.witness(&mut l, v)?);
            }
            let message: [Cell; L] = cells.try_into().map_err(|_| Error::Synthesis)?;
            let h = c.hash(&mut l, message)?;
            c.expose(&mut l, &h, 0)
        }
    }

    /// Inputs `1, 2, …, L`.
    fn inputs<const L: usize>() -> [Fp; L] {
        std::array::from_fn(|i| Fp::from(i as u64 + 1))
    }

    fn check<const L: usize>(golden: &str) {
        let message = inputs::<L>();
        let native = poseidon(message);
        assert_eq!(hex::encode(fe_to_bytes(&native)), golden, "L = {L}");
        let circuit = HashCircuit(message.map(Value::known));
        MockProver::run(8, &circuit, vec![vec![native]])
            .unwrap()
            .assert_satisfied();
        let wrong = MockProver::run(8, &circuit, vec![vec![native + Fp::one()]]).unwrap();
        assert!(
            wrong.verify().is_err(),
            "L = {L}: a wrong digest was accepted"
        );
    }

    /// §5.4 item 5: the in-circuit hash equals the native one for `L = 1, 2, 3, 5` on fixed
    /// vectors, and both equal the pinned digests (a change to either side fails here).
    /// `L = 2` is also checked against zcash-test-vectors in `tests/circuits.rs`.
    #[test]
    fn poseidon_in_circuit_matches_native_for_each_arity() {
        check::<1>("1db653e06ed1ee97fa4749c40afa3f2220943b3242a8e6a35f7158cf4d084431");
        check::<2>("4ce3bd9407dc758983c62390ce00463beb82796eb0d40a0398993cb4eca55535");
        check::<3>("eafce114beaa82503698d4acc618788b648cc6409822265f9e3eea1ec642ab18");
        check::<5>("b742ad40f053cea184d34f26f00c908ef78bad38363b33492a71f0f21567961d");
    }
}
