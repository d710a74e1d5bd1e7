//! The cost model shared by extraction and the report: FLOPs at nominal shapes plus weight bytes.
//!
//! Symbolic dimensions (batch, sequence) are costed at nominal values: the caller's `--set`
//! values, else [`NOMINAL_DIM`]. Only relative costs matter for extraction.

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// Value given to a symbol that has none, when costing.
pub const NOMINAL_DIM: i64 = 16;

/// Concrete values for symbolic dimensions.
#[derive(Clone, Debug, Default)]
pub struct Nominal {
    /// Values of symbols given by the user.
    pub values: SymbolValues,
}

impl Nominal {
    /// The concrete size of a dimension; unknown symbols count as [`NOMINAL_DIM`].
    pub fn dim(&self, dim: &TDim) -> f64 {
        let evaluated = dim.eval(&self.values);
        if let Ok(v) = evaluated.to_i64() {
            return v as f64;
        }
        let symbols = evaluated.symbols();
        let mut values = self.values.clone();
        for s in symbols {
            values = values.with(&s, NOMINAL_DIM);
        }
        evaluated
            .eval(&values)
            .to_i64()
            .map(|v| v as f64)
            .unwrap_or(NOMINAL_DIM as f64)
    }

    /// Element count of a tensor type.
    pub fn elements(&self, fact: &TypedFact) -> f64 {
        fact.shape.iter().map(|d| self.dim(d)).product()
    }

    /// Multiply-adds of an EinSum counted as two FLOPs each: twice the product of every axis size.
    pub fn einsum_flops(&self, op: &EinSum, inputs: &[&TypedFact]) -> f64 {
        let mut flops = 2.0;
        for axis in op.axes.iter_all_axes() {
            let size = (0..inputs.len())
                .flat_map(|slot| axis.inputs[slot].iter().map(move |&a| (slot, a)))
                .map(|(slot, a)| self.dim(&inputs[slot].shape[a]))
                .fold(1.0, f64::max);
            flops *= size;
        }
        flops
    }

    /// FLOPs of any op: EinSums by their products, everything else one per output element.
    pub fn op_flops(&self, op: &dyn TypedOp, inputs: &[&TypedFact], output: &TypedFact) -> f64 {
        if op.is::<AxisOp>() {
            return 0.0;
        }
        match op.downcast_ref::<EinSum>() {
            Some(einsum) => self.einsum_flops(einsum, inputs),
            None => self.elements(output),
        }
    }
}
