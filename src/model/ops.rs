//! What the pass knows about tract ops, in one place: the [`Family`] each op belongs to (how its
//! output positions depend on its inputs' — lowering makes one e-node kind of each family), and
//! the few facts about particular ops that the analysis, the guards and discovery rely on.
//! Ops are told apart by type (downcasts), never by name.

use tract_core::internal::*;
use tract_core::ops::array::{
    CumSum, Gather, GatherElements, GatherNd, MultiBroadcastTo, Pad, PadMode, Slice, TypedConcat,
};
use tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_core::ops::cast::Cast;
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool};
use tract_core::ops::downsample::Downsample;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_core::ops::logic::{And, CompEq, CompGT, CompGTE, CompLT, CompLTE, CompNE, Iff, Not, Or};
use tract_core::ops::math::{
    Abs, Add, Atan, Ceil, Cos, Erf, Floor, IsNan, Max, Min, Mul, Neg, PowConst, Round,
    RoundHalfToEven, Sign, Sin, Square, Sub, Tanh,
};
use tract_core::ops::nn::{
    GeluApproximate, GeluExact, HardSwish, LeakyRelu, NearestUpsample, Reduce, Resize, RmsNorm,
    Sigmoid, Silu, Softmax,
};

/// How an op's output positions depend on its inputs'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Position-wise on one input: `y[p] = f(x[p])` (element-wise functions, casts).
    Map,
    /// Position-wise on two broadcast inputs: `y[p] = f(a[p], b[p])`.
    Bin,
    /// A tensor contraction without quantization.
    EinSum,
    /// Works along some axes; slices across the others are independent (softmax, reductions,
    /// norms, slices, and poolings, paddings, downsamplings and resamplings along their spatial
    /// axes).
    Along,
    /// Moves positions without computing (reshapes, permutations, added or removed axes).
    Axis,
    /// A position-wise choice `where(c, x, y)`.
    Where,
    /// Broadcasts an input to a larger shape.
    Bcast,
    /// Concatenates two inputs.
    Concat,
    /// A float convolution of data by a kernel plus a bias ([`plain_conv`]).
    Conv,
    /// Anything else: the pass sees through it nothing.
    Opaque,
}

/// The family of a single-output op applied to `inputs` operands.
pub fn family(op: &dyn TypedOp, inputs: usize) -> Family {
    match inputs {
        1 if is_map(op) => Family::Map,
        2 if op.is::<TypedBinOp>() => Family::Bin,
        2 if is_plain_einsum(op) => Family::EinSum,
        1 if is_along(op) => Family::Along,
        1 if op.is::<AxisOp>() => Family::Axis,
        3 if op.is::<Iff>() => Family::Where,
        1 if op.is::<MultiBroadcastTo>() => Family::Bcast,
        2 if op.is::<TypedConcat>() => Family::Concat,
        3 if plain_conv(op).is_some() => Family::Conv,
        _ => Family::Opaque,
    }
}

/// Whether an op is position-wise on one input: an element-wise function or a cast.
pub fn is_map(op: &dyn Op) -> bool {
    op.is::<ElementWiseOp>() || op.is::<Cast>()
}

/// Whether an op is an EinSum without quantization parameters.
pub fn is_plain_einsum(op: &dyn Op) -> bool {
    op.downcast_ref::<EinSum>()
        .is_some_and(|e| e.q_params.is_none())
}

/// The op as a convolution the conv rules reason about: float (no quantization) with an
/// `OIHW` kernel (ONNX's layout), so that the kernel's output channels are axis 0, its input
/// channels within a group axis 1, and output channel `o` belongs to group `o / (O / group)`.
pub fn plain_conv(op: &dyn Op) -> Option<&Conv> {
    op.downcast_ref::<Conv>()
        .filter(|c| c.q_params.is_none() && c.kernel_fmt == KernelFormat::OIHW)
}

/// The channel axis of a convolution's data input and output: they have the same rank (the
/// kernel's spatial axes, channels, and a batch axis when the data format has one).
pub fn conv_channel_axis(conv: &Conv) -> usize {
    channel_axis(&conv.pool_spec)
}

/// The channel axis of data of `spec`'s format and rank.
fn channel_axis(spec: &PoolSpec) -> usize {
    let format = spec.data_format;
    if format.c_is_last() {
        format.has_n() as usize + spec.rank()
    } else {
        format.has_n() as usize
    }
}

/// Whether an op belongs to the [`Family::Along`] family.
pub fn is_along(op: &dyn Op) -> bool {
    op.is::<Softmax>()
        || op.is::<Reduce>()
        || op.is::<RmsNorm>()
        || op.is::<Slice>()
        || op.is::<Downsample>()
        || op.is::<NearestUpsample>()
        || op.is::<ConstantResize>()
        || op.is::<Pad>()
        || op.is::<SumPool>()
        || op
            .downcast_ref::<MaxPool>()
            .is_some_and(|p| p.with_index_outputs.is_none())
}

/// The axes a pooling of `spec` works along: its spatial axes (channels are pooled apart).
fn pooled_axes(spec: &PoolSpec) -> TVec<usize> {
    let format = spec.data_format;
    let first = format.has_n() as usize + !format.c_is_last() as usize;
    (first..first + spec.rank()).collect()
}

/// The channel axis of a pooling's data: the op states its size (`PoolSpec`'s channel counts),
/// so a restriction of it crosses the pooling only as a pooling of fewer channels
/// ([`with_channels`]).
pub fn stated_channel_axis(op: &dyn Op) -> Option<usize> {
    pool_spec(op).map(channel_axis)
}

/// The same max or average pooling of `channels` channels.
pub fn with_channels(op: &dyn Op, channels: usize) -> Option<Box<dyn TypedOp>> {
    let resize = |spec: &PoolSpec| PoolSpec {
        input_channels: channels,
        output_channels: channels,
        ..spec.clone()
    };
    if let Some(p) = op.downcast_ref::<MaxPool>() {
        let pooling = MaxPool::new(resize(&p.pool_spec), p.with_index_outputs);
        return Some(Box::new(pooling));
    }
    let p = op.downcast_ref::<SumPool>()?;
    let pooling = SumPool::new(resize(&p.pool_spec), p.count_include_pad, p.normalize);
    Some(Box::new(pooling))
}

/// The axes an [`Family::Along`] op works along: slices across other axes are independent.
pub fn along_axes(op: &dyn Op) -> TVec<usize> {
    if let Some(s) = op.downcast_ref::<Softmax>() {
        s.axes.clone()
    } else if let Some(r) = op.downcast_ref::<Reduce>() {
        r.axes.clone()
    } else if let Some(n) = op.downcast_ref::<RmsNorm>() {
        tvec!(n.axis)
    } else if let Some(s) = op.downcast_ref::<Slice>() {
        tvec!(s.axis)
    } else if let Some(d) = op.downcast_ref::<Downsample>() {
        tvec!(d.axis)
    } else if let Some(u) = op.downcast_ref::<NearestUpsample>() {
        (0..u.scales.len()).filter(|&a| u.scales[a] != 1).collect()
    } else if let Some(r) = op.downcast_ref::<ConstantResize>() {
        r.resampled.clone()
    } else if let Some(p) = op.downcast_ref::<Pad>() {
        (0..p.pads.len()).filter(|&a| p.pads[a] != (0, 0)).collect()
    } else if let Some(spec) = pool_spec(op) {
        pooled_axes(spec)
    } else {
        tvec!()
    }
}

/// The pool spec of a max or average pooling.
fn pool_spec(op: &dyn Op) -> Option<&PoolSpec> {
    match op.downcast_ref::<MaxPool>() {
        Some(p) => Some(&p.pool_spec),
        None => op.downcast_ref::<SumPool>().map(|p| &p.pool_spec),
    }
}

/// A resampling (`Resize`: linear, cubic or nearest) whose scales are constants, taken in as
/// part of the op so that it is an op of its data alone: an along-op on the axes it resamples
/// (each output position a weighted sum of input positions along them), as lowering sees it.
/// Raising wires the `Resize` again with its constants.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ConstantResize {
    pub resize: Resize,
    /// The `Resize`'s inputs after its data, every one a constant.
    pub constants: Vec<Arc<Tensor>>,
    /// The axes whose scale is not one.
    resampled: TVec<usize>,
}

impl ConstantResize {
    /// The op for a `Resize` reading `constants` after its data, when they hold its scales (not
    /// sizes, which state the channel count a restriction would change).
    pub fn of(op: &dyn Op, constants: Vec<Arc<Tensor>>) -> Option<ConstantResize> {
        let resize = op.downcast_ref::<Resize>()?;
        if resize.optional_sizes_input.is_some() {
            return None;
        }
        let slot = resize.optional_scales_input?;
        let scales = constants.get(slot.checked_sub(1)?)?.cast_to::<f32>().ok()?;
        let scales = scales.to_plain_array_view::<f32>().ok()?;
        let resampled = scales.iter().enumerate();
        let resampled = resampled
            .filter(|(_, s)| **s != 1.0)
            .map(|(a, _)| a)
            .collect();
        Some(ConstantResize {
            resize: resize.clone(),
            constants,
            resampled,
        })
    }
}

impl Op for ConstantResize {
    fn name(&self) -> StaticName {
        "ConstantResize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ConstantResize {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let data = args_1!(inputs);
        let constants = self.constants.iter().map(|t| t.clone().into_tvalue());
        self.resize
            .eval(ctx, std::iter::once(data).chain(constants).collect())
    }
}

impl TypedOp for ConstantResize {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let constants = self
            .constants
            .iter()
            .map(TypedFact::try_from)
            .collect::<TractResult<Vec<TypedFact>>>()?;
        let facts: Vec<&TypedFact> = std::iter::once(inputs[0]).chain(constants.iter()).collect();
        self.resize.output_facts(&facts)
    }
}

/// Whether an [`Family::Along`] op keeps a zero slice (across its axes) zero: all but softmax,
/// which turns it into a uniform one, a pooling with windows of padding alone, and a padding
/// with a constant other than zero.
pub fn along_preserves_zeros(op: &dyn Op) -> bool {
    is_along(op)
        && !op.is::<Softmax>()
        && windows_see_data(op)
        && pad_constant(op).is_none_or(|v| v == 0.0)
}

/// The constant a padding fills with (NaN when it is not a number), if it is a constant padding
/// (reflection and edge padding copy data).
fn pad_constant(op: &dyn Op) -> Option<f32> {
    match &op.downcast_ref::<Pad>()?.mode {
        PadMode::Constant(value) => Some(value.cast_to_scalar::<f32>().unwrap_or(f32::NAN)),
        PadMode::Reflect | PadMode::Edge => None,
    }
}

/// Whether every window of a pooling holds some data (not only padding), as PyTorch's poolings
/// do (padding at most half the kernel): a window of padding alone gives max pooling -inf, and
/// average pooling without the padding counted 0 / 0. Other ops have no windows.
fn windows_see_data(op: &dyn Op) -> bool {
    let Some(spec) = pool_spec(op) else {
        return true;
    };
    let undilated = spec
        .dilations
        .as_ref()
        .is_none_or(|d| d.iter().all(|d| *d == 1));
    let within_kernel = |pads: &[usize]| pads.iter().zip(&spec.kernel_shape).all(|(p, k)| p < k);
    match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::SameUpper | PaddingSpec::SameLower => undilated,
        PaddingSpec::Explicit(before, after)
        | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
            undilated && within_kernel(before) && within_kernel(after)
        }
        _ => false,
    }
}

/// Whether some window of a convolution or pooling of `spec` reaches padding. Where none does,
/// a constant channel adds the same to every output position (the conv fold of constant
/// channels relies on it).
pub fn reads_padding(spec: &PoolSpec) -> bool {
    match &spec.padding {
        PaddingSpec::Valid => false,
        PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, _) => {
            before.iter().chain(after.iter()).any(|p| *p != 0)
        }
        _ => true,
    }
}

/// The binary mini-op of a [`Family::Bin`] op, if it is `T`.
fn bin_is<T: BinMiniOp>(op: &dyn Op) -> bool {
    op.downcast_ref::<TypedBinOp>()
        .is_some_and(|b| b.0.is::<T>())
}

/// The element-wise mini-op of a [`Family::Map`] op, if it is `T`.
fn map_is<T: ElementWiseMiniOp>(op: &dyn Op) -> bool {
    op.downcast_ref::<ElementWiseOp>()
        .is_some_and(|e| e.0.is::<T>())
}

/// Whether an op is the addition `a + b`.
pub fn is_add(op: &dyn Op) -> bool {
    bin_is::<Add>(op)
}

/// Whether an op is the product `a · b`.
pub fn is_mul(op: &dyn Op) -> bool {
    bin_is::<Mul>(op)
}

/// Whether an op is the test `isnan(x)`.
pub fn is_nan_test(op: &dyn Op) -> bool {
    map_is::<IsNan>(op)
}

/// Whether an op is a cast.
pub fn is_cast(op: &dyn Op) -> bool {
    op.is::<Cast>()
}

/// Whether an op of `family` computes finite values from finite operands (ignoring float
/// overflow, as everywhere here): products and sums, comparisons and logic, choices, data
/// movement, bounded functions, natural powers, and the opaque ops a decluttered
/// transformer holds (gathers, convolutions). Not division, reciprocals, roots, logarithms,
/// exponentials or other powers, which make infinities of finite values.
pub fn keeps_finite(family: Family, op: &dyn Op) -> bool {
    match family {
        Family::EinSum
        | Family::Where
        | Family::Axis
        | Family::Bcast
        | Family::Concat
        | Family::Conv => true,
        Family::Along => windows_see_data(op) && pad_constant(op).is_none_or(f32::is_finite),
        Family::Bin => bin_keeps_finite(op),
        Family::Map => is_cast(op) || map_keeps_finite(op),
        Family::Opaque => opaque_keeps_finite(op),
    }
}

fn bin_keeps_finite(op: &dyn Op) -> bool {
    bin_is::<Add>(op)
        || bin_is::<Sub>(op)
        || bin_is::<Mul>(op)
        || bin_is::<Max>(op)
        || bin_is::<Min>(op)
        || bin_is::<And>(op)
        || bin_is::<Or>(op)
        || bin_is::<CompEq>(op)
        || bin_is::<CompNE>(op)
        || bin_is::<CompLT>(op)
        || bin_is::<CompLTE>(op)
        || bin_is::<CompGT>(op)
        || bin_is::<CompGTE>(op)
}

fn map_keeps_finite(op: &dyn Op) -> bool {
    // x^e is finite for every finite x only for natural e (x^-1 at 0, x^0.5 below 0 are not).
    let natural_power = op
        .downcast_ref::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<PowConst>())
        .is_some_and(|p| p.exponent >= 0.0 && p.exponent.fract() == 0.0);
    natural_power
        || map_is::<Neg>(op)
        || map_is::<Abs>(op)
        || map_is::<Erf>(op)
        || map_is::<Tanh>(op)
        || map_is::<Sigmoid>(op)
        || map_is::<Silu>(op)
        || map_is::<GeluExact>(op)
        || map_is::<GeluApproximate>(op)
        || map_is::<HardSwish>(op)
        || map_is::<LeakyRelu>(op)
        || map_is::<Atan>(op)
        || map_is::<RoundHalfToEven>(op)
        || map_is::<Cos>(op)
        || map_is::<Sin>(op)
        || map_is::<IsNan>(op)
        || map_is::<Not>(op)
        || map_is::<Square>(op)
        || map_is::<Round>(op)
        || map_is::<Floor>(op)
        || map_is::<Ceil>(op)
        || map_is::<Sign>(op)
}

fn opaque_keeps_finite(op: &dyn Op) -> bool {
    op.is::<Gather>()
        || op.is::<GatherNd>()
        || op.is::<GatherElements>()
        || op.is::<Conv>()
        || op.is::<TypedConcat>()
        || op.is::<CumSum>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::math::{add, div, exp, mul};

    #[test]
    fn finite_ops_by_type() {
        assert!(keeps_finite(Family::Bin, &add()));
        assert!(keeps_finite(Family::Bin, &mul()));
        assert!(!keeps_finite(Family::Bin, &div()));
        assert!(!keeps_finite(Family::Map, &exp()));
        let power = |exponent| ElementWiseOp(Box::new(PowConst { exponent }), None);
        assert!(keeps_finite(Family::Map, &power(3.0)));
        assert!(!keeps_finite(Family::Map, &power(0.5)));
        assert!(!keeps_finite(Family::Map, &power(-1.0)));
    }

    #[test]
    fn families_of_ops() {
        assert_eq!(family(&add(), 2), Family::Bin);
        assert!(is_add(&add()) && !is_add(&mul()) && is_mul(&mul()));
        assert_eq!(family(&AxisOp::Add(0), 1), Family::Axis);
        assert_eq!(family(&Softmax::default(), 1), Family::Along);
    }
}
