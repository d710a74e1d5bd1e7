//! Guards of the convolution rules (`rules/conv.rules`): how a restriction of a convolution's
//! output channels reaches its kernel, bias and (for grouped convolutions) its data, and which
//! input channels contribute nothing.
//!
//! A convolution of `group` groups with an `OIHW` kernel ([`ops::plain_conv`]) maps input
//! channels `[g·I_g, (g+1)·I_g)` to output channels `[g·O_g, (g+1)·O_g)` through kernel rows
//! `[g·O_g, (g+1)·O_g)`, each row of `I_g` input slices. So a grouped convolution loses
//! channels either *equally in every group* (the same number of output rows per group, or the
//! same input positions within every group: the group count stays), or *in whole groups*
//! (the group count shrinks with them). Anything else — a depthwise channel whose input is
//! zero, say — keeps its channels.

use super::{add_op, add_set, axis, class, Alternatives, Arg};
use crate::egraph::analysis::{const_of, op_of, set_of, SlimGraph};
use crate::egraph::known;
use crate::egraph::lang::{Key, TensorLang};
use crate::model::ops;
use egg::Id;
use tract_core::internal::*;
use tract_core::ops::cnn::Conv;

/// The convolution op of class `arg`, when the conv rules reason about it.
fn conv(egraph: &SlimGraph, arg: Arg) -> Option<Conv> {
    let key = op_of(egraph, class(arg)?)?;
    ops::plain_conv(egraph.analysis.tables.ops[key as usize].as_op()).cloned()
}

/// `conv` with other channel counts and group count.
fn resized(conv: &Conv, input_channels: usize, output_channels: usize, group: usize) -> Conv {
    let mut resized = conv.clone();
    resized.pool_spec.input_channels = input_channels;
    resized.pool_spec.output_channels = output_channels;
    resized.group = group;
    resized
}

/// The restriction `?i` of the output channel axis `?a`, when it is one: strictly increasing
/// (a selection with repeats or out of order is not a smaller convolution).
fn output_restriction(
    egraph: &SlimGraph,
    conv: &Conv,
    args: &[Arg],
) -> Option<std::sync::Arc<Vec<usize>>> {
    let kept = set_of(egraph, class(args[2])?)?;
    let increasing = kept.windows(2).all(|w| w[0] < w[1]);
    (axis(egraph, args[1])? == ops::conv_channel_axis(conv) && increasing && !kept.is_empty())
        .then_some(kept)
}

/// How many of the kept output channels fall in each group.
fn kept_per_group(conv: &Conv, kept: &[usize]) -> Vec<usize> {
    let per_group = conv.output_channels() / conv.group;
    let mut counts = vec![0; conv.group];
    for &o in kept {
        counts[o / per_group] += 1;
    }
    counts
}

/// `conv-output(?op, ?a, ?i)`: the convolution computing only output channels `?i`, when they
/// keep the same number of channels in every group (any set, for one group).
pub fn conv_output(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let conv = conv(egraph, args[0])?;
        let kept = output_restriction(egraph, &conv, args)?;
        let counts = kept_per_group(&conv, &kept);
        if counts.iter().any(|&c| c != counts[0]) {
            return None;
        }
        Some(resized(
            &conv,
            conv.input_channels(),
            kept.len(),
            conv.group,
        ))
    })();
    found
        .map(|op| vec![vec![add_op(egraph, Box::new(op), Some(args[0]))]])
        .unwrap_or_default()
}

/// `conv-groups(?op, ?a, ?i)`: for a grouped convolution whose output restriction `?i` leaves
/// some groups untouched, the data channel axis, the input channels and the output channels of
/// the groups it touches, the convolution of those groups alone, and `?i` within their outputs.
pub fn conv_groups(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let conv = conv(egraph, args[0])?;
        let kept = output_restriction(egraph, &conv, args)?;
        let counts = kept_per_group(&conv, &kept);
        let groups: Vec<usize> = (0..conv.group).filter(|&g| counts[g] > 0).collect();
        if groups.len() == conv.group {
            return None;
        }
        let (in_g, out_g) = (
            conv.input_channels() / conv.group,
            conv.output_channels() / conv.group,
        );
        let channels_of = |size: usize| -> Vec<usize> {
            groups
                .iter()
                .flat_map(|g| g * size..(g + 1) * size)
                .collect()
        };
        let (inputs, outputs) = (channels_of(in_g), channels_of(out_g));
        let within = kept
            .iter()
            .map(|o| outputs.binary_search(o).ok())
            .collect::<Option<Vec<_>>>()?;
        let op = resized(&conv, inputs.len(), outputs.len(), groups.len());
        Some((ops::conv_channel_axis(&conv), inputs, outputs, op, within))
    })();
    let Some((channel_axis, inputs, outputs, op, within)) = found else {
        return vec![];
    };
    vec![vec![
        super::add_num(egraph, channel_axis),
        add_set(egraph, inputs),
        add_set(egraph, outputs),
        add_op(egraph, Box::new(op), Some(args[0])),
        add_set(egraph, within),
    ]]
}

/// Positions within a group (`0..I_g`) whose input channel contributes nothing in every group:
/// the kernel's input slice is zero (against finite data), or the data channel is zero in
/// every group (against a finite kernel; zero padding adds only zeros).
fn droppable_positions(egraph: &SlimGraph, conv: &Conv, data: Id, kernel: Id) -> Vec<usize> {
    let (data, kernel) = (&egraph[data].data, &egraph[kernel].data);
    let in_g = conv.input_channels() / conv.group;
    let channel_axis = ops::conv_channel_axis(conv);
    (0..in_g)
        .filter(|&j| {
            let zero_taps = data.finite && kernel.zeros_on(1).binary_search(&j).is_ok();
            let zero_data = kernel.finite
                && (0..conv.group).all(|g| {
                    data.zeros_on(channel_axis)
                        .binary_search(&(g * in_g + j))
                        .is_ok()
                });
            zero_taps || zero_data
        })
        .collect()
}

/// `conv-zero-inputs(?op, ?x, ?k)`: the data channel axis, the data channels to keep, the kernel
/// input positions to keep and the smaller convolution, when some input position contributes
/// nothing in every group and another does.
pub fn conv_zero_inputs(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let conv = conv(egraph, args[0])?;
        let (data, kernel) = (class(args[1])?, class(args[2])?);
        let dropped = droppable_positions(egraph, &conv, data, kernel);
        let in_g = conv.input_channels() / conv.group;
        let positions: Vec<usize> = (0..in_g).filter(|j| !dropped.contains(j)).collect();
        // Nothing kept would leave an empty kernel: the output is then its bias, which the
        // cost model alone cannot decide to write.
        if dropped.is_empty() || positions.is_empty() {
            return None;
        }
        let channels: Vec<usize> = (0..conv.group)
            .flat_map(|g| positions.iter().map(move |j| g * in_g + j))
            .collect();
        let op = resized(&conv, channels.len(), conv.output_channels(), conv.group);
        Some((ops::conv_channel_axis(&conv), channels, positions, op))
    })();
    let Some((channel_axis, channels, positions, op)) = found else {
        return vec![];
    };
    vec![vec![
        super::add_num(egraph, channel_axis),
        add_set(egraph, channels),
        add_set(egraph, positions),
        add_op(egraph, Box::new(op), Some(args[0])),
    ]]
}

/// The data channels of `data` holding one known constant everywhere, with that constant.
fn constant_channels(egraph: &SlimGraph, data: Id, axis: usize) -> Vec<(usize, f32)> {
    known::nonzero_known(egraph, data, axis)
        .into_iter()
        .filter(|(_, value)| value.len() == 1)
        .filter_map(|(c, value)| Some((c, *value.cast_to_scalar::<f32>().ok().as_ref()?)))
        .collect()
}

/// The bias plus, for each constant channel `(c, v)`, `v` times the sum of kernel slice `c`'s
/// taps: `[O]`.
fn folded_bias(kernel: &Tensor, bias: &Tensor, constants: &[(usize, f32)]) -> Option<Tensor> {
    let o = kernel.shape()[0];
    let kernel = kernel.cast_to::<f32>().ok()?;
    let kernel = kernel.to_plain_array_view::<f32>().ok()?;
    let bias = bias.cast_to::<f32>().ok()?.broadcast_to_shape(&[o]).ok()?;
    let mut folded = bias.to_plain_array_view::<f32>().ok()?.to_owned();
    for &(c, v) in constants {
        let slice = kernel.index_axis(tract_ndarray::Axis(1), c);
        for (out, row) in folded.iter_mut().zip(slice.outer_iter()) {
            *out += v * row.sum();
        }
    }
    Some(folded.into_tensor())
}

/// `conv-constant-inputs(?op, ?x, ?k, ?b)`: for a convolution of one group that never reads
/// padding, with constant kernel and bias, the data channel axis, the channels to keep, the
/// smaller convolution and the bias the constant channels fold into (only when some go and
/// some stay).
pub fn conv_constant_inputs(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let conv =
            conv(egraph, args[0]).filter(|c| c.group == 1 && !ops::reads_padding(&c.pool_spec))?;
        let (data, kernel, bias) = (class(args[1])?, class(args[2])?, class(args[3])?);
        let tables = &egraph.analysis.tables;
        let bias_key = const_of(egraph, bias)?;
        let kernel = tables.consts.tensor(const_of(egraph, kernel)?).ok()?;
        let bias = tables.consts.tensor(bias_key).ok()?;
        let channel_axis = ops::conv_channel_axis(&conv);
        let constants = constant_channels(egraph, data, channel_axis);
        let kept: Vec<usize> = (0..conv.input_channels())
            .filter(|c| constants.iter().all(|(k, _)| k != c))
            .collect();
        if constants.is_empty() || kept.is_empty() {
            return None;
        }
        let folded = folded_bias(&kernel, &bias, &constants)?;
        let op = resized(&conv, kept.len(), conv.output_channels(), 1);
        let name = format!("{}.folded", tables.consts.name(bias_key));
        Some((channel_axis, kept, op, folded, name))
    })();
    let Some((channel_axis, kept, op, folded, name)) = found else {
        return vec![];
    };
    let Ok(folded) = egraph.analysis.tables.consts.computed(folded, name) else {
        return vec![];
    };
    vec![vec![
        super::add_num(egraph, channel_axis),
        add_set(egraph, kept),
        add_op(egraph, Box::new(op), Some(args[0])),
        egraph.add(TensorLang::Key(Key::Const(folded))),
    ]]
}
