//! The cost model shared by extraction and the report: FLOPs at nominal shapes plus weight bytes.
//!
//! Symbolic dimensions (batch, sequence) are costed at nominal values: the caller's `--set`
//! values, else [`NOMINAL_DIM`]. Only relative costs matter for extraction.

use tract_core::internal::*;
use tract_core::ops::cnn::Conv;
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

    /// Multiply-adds of a convolution counted as two FLOPs each, as the op counts them from its
    /// pool spec (kernel, strides, dilations, padding) and group.
    pub fn conv_flops(&self, conv: &Conv, inputs: &[&TypedFact]) -> f64 {
        let Ok(costs) = conv.cost(inputs) else {
            return 0.0;
        };
        let fma = costs.iter().filter(|(c, _)| matches!(c, Cost::FMA(_)));
        2.0 * fma.map(|(_, n)| self.dim(n)).sum::<f64>()
    }

    /// FLOPs of any op: EinSums and convolutions by their products, everything else one per
    /// output element.
    pub fn op_flops(&self, op: &dyn TypedOp, inputs: &[&TypedFact], output: &TypedFact) -> f64 {
        if op.is::<AxisOp>() {
            return 0.0;
        }
        if let Some(einsum) = op.downcast_ref::<EinSum>() {
            return self.einsum_flops(einsum, inputs);
        }
        match op.downcast_ref::<Conv>() {
            Some(conv) => self.conv_flops(conv, inputs),
            None => self.elements(output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_core::ops::nn::DataFormat;

    /// A 3×3 convolution of `group` groups from 4 to 8 channels, over 10×10 at `stride`.
    fn conv(group: usize, stride: usize) -> (Conv, [TypedFact; 3]) {
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: 4,
            output_channels: 8,
        };
        let op = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        let facts = [
            f32::fact([1, 4, 10, 10]),
            f32::fact([8, 4 / group, 3, 3]),
            f32::fact([8]),
        ];
        (op, facts)
    }

    #[test]
    fn a_convolution_costs_its_multiply_adds() {
        let nominal = Nominal::default();
        for (group, stride, outputs) in [(1, 1, 8 * 8), (2, 1, 8 * 8), (1, 2, 4 * 4)] {
            let (op, facts) = conv(group, stride);
            let inputs: Vec<&TypedFact> = facts.iter().collect();
            let output = op.output_facts(&inputs).unwrap().remove(0);
            // Every output point of every output channel reads 3×3 taps of each channel of its
            // group.
            let expected = 2.0 * (8 * outputs * 9 * (4 / group)) as f64;
            assert_eq!(nominal.op_flops(&op, &inputs, &output), expected);
        }
    }
}
