//! The zero fact: which slices of each axis of a tensor are provably all zero, from its
//! operands'. Zeros come from constant data ([`crate::egraph::consts`]) and cross ops whose
//! output slice is zero when the matching operand slices are: EinSum products, element-wise
//! ops with `f(0) = 0`, multiplications, choices between two zeros, broadcasts, concatenations,
//! convolutions (a zero filter with a zero bias) and axis bookkeeping. A zero factor makes a zero product only against a finite factor
//! (0 · NaN is NaN), so products count an operand's zeros only when the others are finite.

use crate::egraph::lang::TensorLang;
use crate::model::ops;
use crate::util::slices::ZeroSlices;
use tract_core::internal::*;
use tract_core::ops::array::TypedConcat;
use tract_core::ops::cnn::Conv;
use tract_core::ops::einsum::EinSum;

/// Axes longer than this have their zero slices listed only when a constant has them, so a
/// model declaring absurd sizes cannot make the analysis allocate without bound.
pub const MAX_LISTED_SLICES: usize = 1 << 20;

/// What the zero fact needs of one operand.
pub struct Operand<'a> {
    /// Its type.
    pub fact: &'a TypedFact,
    /// Its zero slices per axis.
    pub zeros: &'a ZeroSlices,
    /// Whether its values are provably finite.
    pub finite: bool,
}

impl Operand<'_> {
    fn is_all_zero(&self) -> bool {
        all_zero(self.zeros, |axis| {
            self.fact.shape.get(axis)?.to_usize().ok()
        })
    }
}

/// Whether a tensor with these zero slices and axis sizes (`None`: not concrete) is all zero:
/// every slice of some concrete axis is.
pub fn all_zero(zeros: &ZeroSlices, dim: impl Fn(usize) -> Option<usize>) -> bool {
    zeros
        .iter()
        .enumerate()
        .any(|(axis, z)| dim(axis) == Some(z.len()))
}

/// The zero slices of `node`'s output `out`, computing `op` on `operands`; `zero_to_zero` says
/// whether the element-wise op maps zeros to zero.
pub fn propagate(
    node: &TensorLang,
    op: &dyn TypedOp,
    zero_to_zero: bool,
    operands: &[Operand],
    out: &TypedFact,
) -> ZeroSlices {
    let none = || vec![vec![]; out.rank()];
    match node {
        TensorLang::Map(_) if zero_to_zero => operands[0].zeros.clone(),
        TensorLang::Bin(_) if ops::is_mul(op) => product_zeros(operands, out),
        TensorLang::Bin(_) if zero_to_zero => common_zeros(&operands[..2], out),
        TensorLang::EinSum(_) => match op.downcast_ref::<EinSum>() {
            Some(einsum) => einsum_zeros(einsum, operands, out),
            None => none(),
        },
        TensorLang::Along(_) if ops::along_preserves_zeros(op) => {
            let own = ops::along_axes(op);
            let mut zeros = operands[0].zeros.clone();
            for axis in own {
                zeros[axis].clear();
            }
            zeros
        }
        // Zero where both choices are zero, whatever the condition.
        TensorLang::Where(_) => common_zeros(&operands[1..], out),
        TensorLang::Bcast(_) => (0..out.rank())
            .map(|axis| broadcast_zeros(&operands[0], axis, out))
            .collect(),
        TensorLang::Concat(_) => match op.downcast_ref::<TypedConcat>() {
            Some(concat) => concat_zeros(operands, concat.axis, out.rank()),
            None => none(),
        },
        TensorLang::Conv(_) => match ops::plain_conv(op) {
            Some(conv) => conv_zeros(conv, operands, out),
            None => none(),
        },
        TensorLang::Axis(_) => match op.downcast_ref::<AxisOp>() {
            Some(axis_op) => {
                let mut zeros = none();
                for (axis, z) in operands[0].zeros.iter().enumerate() {
                    if let Some(to) = axis_op.transform_axis(axis) {
                        zeros[to] = z.clone();
                    }
                }
                zeros
            }
            None => none(),
        },
        _ => none(),
    }
}

/// Whether every operand but `slot` is finite.
fn others_finite(operands: &[Operand], slot: usize) -> bool {
    operands
        .iter()
        .enumerate()
        .all(|(s, o)| s == slot || o.finite)
}

/// An element-wise product is zero where a factor is, against finite other factors.
fn product_zeros(operands: &[Operand], out: &TypedFact) -> ZeroSlices {
    (0..out.rank())
        .map(|axis| {
            (0..operands.len())
                .filter(|slot| others_finite(operands, *slot))
                .fold(vec![], |acc, slot| {
                    union(&acc, &broadcast_zeros(&operands[slot], axis, out))
                })
        })
        .collect()
}

/// An element-wise op with `f(0, 0) = 0` (or a choice) is zero where every operand is.
fn common_zeros(operands: &[Operand], out: &TypedFact) -> ZeroSlices {
    (0..out.rank())
        .map(|axis| {
            let mut zeros = operands.iter().map(|o| broadcast_zeros(o, axis, out));
            let first = zeros.next().unwrap_or_default();
            zeros.fold(first, |acc, z| intersection(&acc, &z))
        })
        .collect()
}

/// An EinSum's output slice is zero where an operand carrying its axis is (against a finite
/// other operand); the whole output is zero when every term of a contraction has a zero
/// factor: an operand all zero, or a contracted axis whose every slice is zero on one side.
fn einsum_zeros(einsum: &EinSum, operands: &[Operand], out: &TypedFact) -> ZeroSlices {
    if every_product_has_a_zero_factor(einsum, operands) {
        return (0..out.rank())
            .map(|axis| every_slice(out.shape[axis].to_usize().unwrap_or(0)))
            .collect();
    }
    (0..out.rank())
        .map(|axis| {
            let Ok(letter) = einsum.axes.axis((InOut::Out(0), axis)) else {
                return vec![];
            };
            let mut acc = vec![];
            for (slot, operand) in operands.iter().enumerate() {
                if !others_finite(operands, slot) {
                    continue;
                }
                for &ia in &letter.inputs[slot] {
                    if operand.fact.shape[ia] == out.shape[axis] {
                        acc = union(&acc, &operand.zeros[ia]);
                    }
                }
            }
            acc
        })
        .collect()
}

fn every_product_has_a_zero_factor(einsum: &EinSum, operands: &[Operand]) -> bool {
    let zeros_counted = |slot: usize, axis: usize| -> &[usize] {
        if others_finite(operands, slot) {
            &operands[slot].zeros[axis]
        } else {
            &[]
        }
    };
    if (0..operands.len()).any(|s| operands[s].is_all_zero() && others_finite(operands, s)) {
        return true;
    }
    operands.len() == 2
        && einsum.axes.iter_all_axes().any(|letter| {
            let [Some(&ax), Some(&ay)] = [letter.inputs[0].first(), letter.inputs[1].first()]
            else {
                return false;
            };
            let contracted = letter.outputs[0].is_empty()
                && letter.inputs[0].len() == 1
                && letter.inputs[1].len() == 1;
            let Ok(n) = operands[0].fact.shape[ax].to_usize() else {
                return false;
            };
            contracted
                && operands[1].fact.shape[ay].to_usize().ok() == Some(n)
                && union(zeros_counted(0, ax), zeros_counted(1, ay)).len() == n
        })
}

/// A convolution's output channel is zero where its kernel's output slice is (against finite
/// data: zero padding only adds zero terms) and its bias is zero.
fn conv_zeros(conv: &Conv, operands: &[Operand], out: &TypedFact) -> ZeroSlices {
    let mut zeros = vec![vec![]; out.rank()];
    let [data, kernel, bias] = operands else {
        return zeros;
    };
    if !data.finite {
        return zeros;
    }
    let zero_bias = |o: &usize| match bias.fact.rank() {
        0 => bias.is_all_zero(),
        _ => bias.zeros[0].binary_search(o).is_ok(),
    };
    zeros[ops::conv_channel_axis(conv)] =
        kernel.zeros[0].iter().copied().filter(zero_bias).collect();
    zeros
}

/// Zero slices of an operand as seen in the broadcast output: a size-1 zero axis is zero everywhere.
fn broadcast_zeros(operand: &Operand, axis: usize, out: &TypedFact) -> Vec<usize> {
    let zeros = &operand.zeros[axis];
    if operand.fact.shape[axis] == out.shape[axis] {
        return zeros.to_vec();
    }
    match (
        operand.fact.shape[axis].to_usize(),
        out.shape[axis].to_usize(),
        zeros.first(),
    ) {
        (Ok(1), Ok(n), Some(0)) => every_slice(n),
        _ => vec![],
    }
}

/// Every slice index of an axis of `n` slices, or none beyond [`MAX_LISTED_SLICES`].
fn every_slice(n: usize) -> Vec<usize> {
    if n > MAX_LISTED_SLICES {
        vec![]
    } else {
        (0..n).collect()
    }
}

/// Zero slices of a two-input concatenation: along the concatenated axis, each input's own at
/// its offset; along the others, the slices zero in both.
fn concat_zeros(operands: &[Operand], axis: usize, rank: usize) -> ZeroSlices {
    (0..rank)
        .map(|a| {
            if a != axis {
                return intersection(&operands[0].zeros[a], &operands[1].zeros[a]);
            }
            let Ok(offset) = operands[0].fact.shape[axis].to_usize() else {
                return vec![];
            };
            let shifted: Vec<usize> = operands[1].zeros[a].iter().map(|i| i + offset).collect();
            union(&operands[0].zeros[a], &shifted)
        })
        .collect()
}

fn intersection(a: &[usize], b: &[usize]) -> Vec<usize> {
    a.iter()
        .copied()
        .filter(|i| b.binary_search(i).is_ok())
        .collect()
}

/// The sorted union of two sorted index lists.
pub fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut u: Vec<usize> = a.iter().chain(b).copied().collect();
    u.sort_unstable();
    u.dedup();
    u
}
