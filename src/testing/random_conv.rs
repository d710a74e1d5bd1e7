//! Random convolutional models for the conv rules' soundness checks and the differential test:
//! a producer convolution (sometimes concatenated with another along the channels), an optional
//! max or average pooling, nearest upsampling, resampling by constant scales (linear, cubic,
//! nearest) or padding (zero, constant, reflection, edge), an optional grouped or depthwise convolution,
//! and a consumer (with, sometimes, a second consumer of the same shape added to it: a zero in
//! one branch only must stay); or, a fifth of the time, constant channels before an unpadded
//! consumer (Network Slimming's γ = 0, folded into its bias). Over 1-D or 2-D data, with random
//! kernel sizes, strides, dilations, padding, groups and zero structure (zero filters under zero
//! or non-zero biases, zero input slices).

use crate::model::ops;
use crate::testing::random::{random_tensor, zero_block_elements, zero_random_slices, Planted};
use rand::rngs::StdRng;
use rand::Rng;
use tract_core::internal::*;
use tract_core::ops::array::{Pad, PadMode, TypedConcat};
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool};
use tract_core::ops::math::{add, max};
use tract_core::ops::nn::{
    sigmoid, CoordTransformer, DataFormat, Interpolator, Nearest, NearestUpsample, Resize,
};

/// A random divisor of `n`.
fn divisor(rng: &mut StdRng, n: usize) -> usize {
    let divisors: Vec<usize> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
    divisors[rng.gen_range(0..divisors.len())]
}

/// A random geometry over `spatial`: kernel sizes, strides, dilations and padding, any of them
/// when `keep_size` is false, else stride 1 and tract's `SameUpper` padding so the output has
/// the input's spatial shape.
fn random_geometry(rng: &mut StdRng, spatial: &[usize], keep_size: bool) -> PoolSpec {
    let rank = spatial.len();
    let dilations: TVec<usize> = (0..rank)
        .map(|_| if keep_size { 1 } else { rng.gen_range(1..3) })
        .collect();
    let strides: TVec<usize> = (0..rank)
        .map(|_| if keep_size { 1 } else { rng.gen_range(1..3) })
        .collect();
    let pads: TVec<usize> = (0..rank).map(|_| rng.gen_range(0..2)).collect();
    let padding = match (keep_size, rng.gen_range(0..2)) {
        (true, _) => PaddingSpec::SameUpper,
        (false, 0) => PaddingSpec::Valid,
        (false, _) => PaddingSpec::Explicit(pads.clone(), pads.clone()),
    };
    let padded = |a: usize| match padding {
        PaddingSpec::Explicit(..) => spatial[a] + 2 * pads[a],
        _ => spatial[a],
    };
    // A kernel no larger than the (padded) data, so every output has at least one position.
    let kernel_shape: TVec<usize> = (0..rank)
        .map(|a| {
            let k = rng.gen_range(1..4);
            if dilations[a] * (k - 1) < padded(a) {
                k
            } else {
                1
            }
        })
        .collect();
    PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape,
        padding,
        dilations: Some(dilations),
        strides: Some(strides),
        input_channels: 0,
        output_channels: 0,
    }
}

/// A random geometry over `spatial` without padding: every window lies within the data.
fn unpadded_geometry(rng: &mut StdRng, spatial: &[usize]) -> PoolSpec {
    let mut geometry = random_geometry(rng, spatial, false);
    geometry.padding = PaddingSpec::Valid;
    let dilations = geometry.dilations.clone().unwrap_or_default();
    for (a, k) in geometry.kernel_shape.iter_mut().enumerate() {
        if dilations[a] * (*k - 1) >= spatial[a] {
            *k = 1;
        }
    }
    geometry
}

/// Wires a convolution of `x` from `input` to `output` channels in `group` groups with a random
/// kernel and bias, parts of which `zero` zeroes: its output, its kernel, and whether it has
/// an all-zero output channel (a zero filter under a zero bias).
fn wire_conv(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    x: OutletId,
    mut pool_spec: PoolSpec,
    (output, group): (usize, usize),
    zero: impl FnOnce(&mut StdRng, &mut Tensor, &mut Tensor),
) -> TractResult<(OutletId, Tensor, bool)> {
    let input = m.outlet_fact(x)?.shape[1].to_usize()?;
    pool_spec.input_channels = input;
    pool_spec.output_channels = output;
    let mut kernel_shape = vec![output, input / group];
    kernel_shape.extend(pool_spec.kernel_shape.iter().copied());
    let mut kernel = random_tensor(rng, &kernel_shape);
    let mut bias = random_tensor(rng, &[output]);
    zero(rng, &mut kernel, &mut bias);
    let zero_channel = (0..output).any(|o| zero_row(&kernel, o) && zero_row(&bias, o));
    let k = m.add_const(format!("{name}.kernel"), kernel.clone())?;
    let b = m.add_const(format!("{name}.bias"), bias)?;
    let conv = Conv::new(pool_spec, KernelFormat::OIHW, group, None);
    Ok((
        m.wire_node(name, conv, &[x, k, b])?[0],
        kernel,
        zero_channel,
    ))
}

/// Whether slice `o` of `t`'s first axis is all zero.
fn zero_row(t: &Tensor, o: usize) -> bool {
    let view = t.to_plain_array_view::<f32>().unwrap();
    let row = view.index_axis(tract_ndarray::Axis(0), o);
    row.iter().all(|v| *v == 0.0)
}

/// Zeroes random filters (output rows) and, sometimes, their biases: zero or constant channels.
fn zero_filters(rng: &mut StdRng, kernel: &mut Tensor, bias: &mut Tensor) {
    if rng.gen_bool(0.4) {
        zero_random_slices(rng, kernel, 0);
        if rng.gen_bool(0.5) {
            let zero: Vec<bool> = (0..bias.len()).map(|o| zero_row(kernel, o)).collect();
            let mut view = bias.to_plain_array_view_mut::<f32>().unwrap();
            for (b, zero) in view.iter_mut().zip(zero) {
                if zero {
                    *b = 0.0;
                }
            }
        }
    }
}

/// Zeroes some filters, never their biases: constant output channels.
fn constant_filters(rng: &mut StdRng, kernel: &mut Tensor, _: &mut Tensor) {
    zero_random_slices(rng, kernel, 0);
}

/// ReLU (as `max` with zero), sigmoid or nothing.
fn conv_activation(m: &mut TypedModel, rng: &mut StdRng, name: &str, a: OutletId) -> OutletId {
    let rank = m.outlet_fact(a).unwrap().rank();
    match rng.gen_range(0..3) {
        0 => {
            let zero = tensor0(0f32).broadcast_into_rank(rank).unwrap();
            let zero = m.add_const(format!("{name}.zero"), zero).unwrap();
            m.wire_node(name, max(), &[a, zero]).unwrap()[0]
        }
        1 => m.wire_node(name, sigmoid(), &[a]).unwrap()[0],
        _ => a,
    }
}

/// Max or average pooling of random geometry over `a`'s spatial axes (channels independent),
/// or a nearest upsampling, a padding, a resampling, or nothing; and whether its output may not be finite
/// (a pooling's window of padding alone: -inf, 0/0).
fn pooling(m: &mut TypedModel, rng: &mut StdRng, a: OutletId) -> TractResult<(OutletId, bool)> {
    let spatial: Vec<usize> = m.outlet_fact(a)?.shape[2..]
        .iter()
        .map(|d| d.to_usize().map_err(|e| anyhow!("{e:?}")))
        .collect::<TractResult<_>>()?;
    let keep_size = rng.gen_bool(0.5);
    let mut pool_spec = random_geometry(rng, &spatial, keep_size);
    let channels = m.outlet_fact(a)?.shape[1].to_usize()?;
    (pool_spec.input_channels, pool_spec.output_channels) = (channels, channels);
    let op: Box<dyn TypedOp> = match rng.gen_range(0..6) {
        0 => Box::new(MaxPool::new(pool_spec, None)),
        1 => Box::new(SumPool::new(pool_spec, rng.gen_bool(0.5), true)),
        2 => {
            // A detector neck's nearest upsampling, by an integer factor per spatial axis.
            let spatial = spatial.iter().map(|_| rng.gen_range(1..4));
            let scales = [1, 1].into_iter().chain(spatial).collect();
            Box::new(NearestUpsample { scales })
        }
        3 => Box::new(random_pad(rng, &spatial)),
        4 => return Ok((random_resize(m, rng, a, spatial.len())?, false)),
        _ => return Ok((a, false)),
    };
    let not_finite = !ops::keeps_finite(ops::Family::Along, op.as_ref());
    Ok((m.wire_node("pool", op, &[a])?[0], not_finite))
}

/// A padding of the spatial axes (sizes `spatial`) by up to two on each side: with zeros, a
/// constant (`F.pad`'s value), a reflection or the edge.
fn random_pad(rng: &mut StdRng, spatial: &[usize]) -> Pad {
    let mode = match rng.gen_range(0..4) {
        0 => PadMode::Constant(Arc::new(0f32.into())),
        1 => PadMode::Constant(Arc::new(rng.gen_range(-1f32..1f32).into())),
        2 => PadMode::Reflect,
        _ => PadMode::Edge,
    };
    // A reflection repeats no edge, so it pads by less than the axis.
    let most = |size: usize| {
        if mode == PadMode::Reflect {
            2.min(size - 1)
        } else {
            2
        }
    };
    let spatial_pads = spatial
        .iter()
        .map(|&size| (rng.gen_range(0..=most(size)), rng.gen_range(0..=most(size))));
    let pads = [(0, 0), (0, 0)].into_iter().chain(spatial_pads).collect();
    Pad { pads, mode }
}

/// A resampling of `a`'s spatial axes by constant scales (a segmentation head's bilinear
/// upsampling, or cubic), as tract reads ONNX's `Resize`: the scales a second input.
fn random_resize(
    m: &mut TypedModel,
    rng: &mut StdRng,
    a: OutletId,
    spatial: usize,
) -> TractResult<OutletId> {
    let interpolator = match rng.gen_range(0..3) {
        0 => Interpolator::Linear,
        1 => Interpolator::Cubic,
        _ => Interpolator::Nearest,
    };
    let coord_transformer = match rng.gen_range(0..3) {
        0 => CoordTransformer::HalfPixel,
        1 => CoordTransformer::AlignCorners,
        _ => CoordTransformer::PytorchHalfPixel,
    };
    let resize = Resize {
        coord_transformer,
        interpolator,
        nearest: Nearest::Floor,
        optional_scales_input: Some(1),
        optional_sizes_input: None,
    };
    let spatial_scales = (0..spatial).map(|_| [1.0f32, 1.5, 2.0][rng.gen_range(0..3)]);
    let scales: Vec<f32> = [1.0, 1.0].into_iter().chain(spatial_scales).collect();
    let scales = m.add_const("resize.scales", tensor1(&scales))?;
    Ok(m.wire_node("resize", resize, &[a, scales])?[0])
}

/// A random convolutional model (see the module docs).
pub fn random_conv(rng: &mut StdRng) -> Planted {
    random_conv_checked(rng).expect("random conv model")
}

fn random_conv_checked(rng: &mut StdRng) -> TractResult<Planted> {
    let spatial: Vec<usize> = (0..rng.gen_range(1..3))
        .map(|_| rng.gen_range(3..8))
        .collect();
    let c0 = rng.gen_range(1..5);
    let c1 = rng.gen_range(2..9);
    let mut shape = vec![1, c0];
    shape.extend(&spatial);
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact(&shape))?;

    // Network Slimming's case, a fifth of the time: constant channels (zero filters under
    // non-zero biases) that only an activation separates from an unpadded consumer of one
    // group, whose bias they fold into.
    let constant_case = rng.gen_bool(0.2);
    let producer_zeros = if constant_case {
        constant_filters
    } else {
        zero_filters
    };
    let group = divisor(rng, gcd(c0, c1));
    let geometry = random_geometry(rng, &spatial, false);
    let (mut a, _, mut zero_data) = wire_conv(
        &mut m,
        rng,
        "producer",
        x,
        geometry.clone(),
        (c1, group),
        producer_zeros,
    )?;
    let mut side_channels = None;
    if rng.gen_bool(0.6) {
        // Another producer of the same geometry, side by side along the channels (a DenseNet
        // block, a detector neck).
        let more = rng.gen_range(1..4);
        let side = wire_conv(&mut m, rng, "side", x, geometry, (more, 1), zero_filters)?;
        zero_data |= side.2;
        let (parts, first) = if rng.gen_bool(0.5) {
            ([a, side.0], c1)
        } else {
            ([side.0, a], 0)
        };
        side_channels = Some(first..first + more);
        a = m.wire_node("channels", TypedConcat::new(1), &parts)?[0];
    }
    let c1 = m.outlet_fact(a)?.shape[1].to_usize()?;
    a = conv_activation(&mut m, rng, "producer.act", a);
    let (pooled_tensor, not_finite) = if constant_case {
        (a, false)
    } else {
        pooling(&mut m, rng, a)?
    };
    a = pooled_tensor;
    let inner: Vec<usize> = m.outlet_fact(a)?.shape[2..]
        .iter()
        .map(|d| d.to_usize().map_err(|e| anyhow!("{e:?}")))
        .collect::<TractResult<_>>()?;
    // A conv of 1 < group < channels (the producer, or the grouped conv below) loses channels
    // only equally per group or in whole groups: others are gathered from its output, which
    // the cost model may refuse for a few weights.
    let mut partly_grouped = 1 < group && group < c1;
    if !constant_case && rng.gen_bool(0.6) {
        // Depthwise half of the time, else any grouping.
        let group = if rng.gen_bool(0.5) {
            c1
        } else {
            divisor(rng, c1)
        };
        partly_grouped |= 1 < group && group < c1;
        let geometry = random_geometry(rng, &inner, true);
        let grouped = wire_conv(
            &mut m,
            rng,
            "grouped",
            a,
            geometry,
            (c1, group),
            zero_filters,
        )?;
        (a, zero_data) = (grouped.0, zero_data || grouped.2);
        a = conv_activation(&mut m, rng, "grouped.act", a);
    }

    let group = if constant_case { 1 } else { divisor(rng, c1) };
    let c2 = group * rng.gen_range(1..3);
    let geometry = if constant_case {
        unpadded_geometry(rng, &inner)
    } else {
        random_geometry(rng, &inner, true)
    };
    let zero_inputs = |rng: &mut StdRng, kernel: &mut Tensor, _: &mut Tensor| {
        match &side_channels {
            // Sometimes exactly the channels of one concatenated producer, or of the other.
            Some(side) if group == 1 && rng.gen_bool(0.8) => {
                let other = rng.gen_bool(0.5);
                let mut view = kernel.to_plain_array_view_mut::<f32>().unwrap();
                for i in (0..c1).filter(|i| side.contains(i) != other) {
                    view.index_axis_mut(tract_ndarray::Axis(1), i).fill(0.0);
                }
            }
            _ if rng.gen_bool(0.7) => zero_random_slices(rng, kernel, 1),
            _ => {}
        }
    };
    let (mut y, kernel, _) = wire_conv(
        &mut m,
        rng,
        "consumer",
        a,
        geometry.clone(),
        (c2, group),
        zero_inputs,
    )?;
    // The consumer's zero input positions go, unless every position is zero, in the kernel or
    // (not counted here) in the data: the output is then its bias, which no rule writes.
    let zero_positions = zero_block_elements(&kernel, 1, 1);
    // Behind a pooling with windows of padding alone the data is not finite: zero taps
    // may still meet -inf. Behind a partly grouped conv, the cut may not pay.
    let countable = !zero_data && !not_finite && !partly_grouped;
    let mut removable_weights = if zero_positions < kernel.len() && countable {
        zero_positions
    } else {
        0
    };
    if rng.gen_bool(0.3) {
        // A second branch of the same shape: a position zero in one branch only stays.
        let (other, _, _) =
            wire_conv(&mut m, rng, "branch", a, geometry, (c2, group), zero_inputs)?;
        y = m.wire_node("sum", add(), &[y, other])?[0];
        removable_weights = 0;
    }
    m.select_output_outlets(&[y])?;
    Ok(Planted {
        model: m,
        removable_weights,
        cache_heads: None,
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
