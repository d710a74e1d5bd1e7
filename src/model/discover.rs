//! Discovery: the groups of units that slimming removes together, found on a typed tract model —
//! the hidden channels of each FFN and the heads of each attention block.
//!
//! A group is anchored at its *consumer*, a linear layer (an EinSum against a constant weight)
//! contracting the units: zeroing a unit's slice of the consumer's weight is all the slimming
//! pass needs to remove the unit everywhere (`rules/ffn.rules` starts from exactly that). So a
//! group records where its units are in the consumer's weight and input (for pruning and
//! scoring), which producer weights compute them (for magnitude scores), and the bias added to
//! the consumer's output (for bias compensation).
//!
//! - FFN: a consumer with one contracted axis whose input is computed, through element-wise
//!   ops, bias adds and axis bookkeeping only, from producer linear layers.
//! - Heads: a softmax · V EinSum — the probabilities may come through sdpa's NaN guard
//!   `where(isnan(p), 0, p)` and reshapes — whose heads are the probabilities' axes the output
//!   keeps other than the query axis (the one before the key axis) and the batch: one axis, or
//!   for grouped-query attention two adjacent ones, KV group × head within the group (tract
//!   splits the head axis so that V is read once per group). They are followed through axis
//!   bookkeeping (the reshape merging heads × head_dim) to the output projection.

use crate::model::ops;
use crate::util::slices::{around, fill_runs, zero_slices_of};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tract_core::internal::*;
use tract_core::ops::array::{Gather, MultiBroadcastTo};
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cast::Cast;
use tract_core::ops::cnn::Conv;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_core::ops::logic::Iff;
use tract_core::ops::nn::Softmax;
use tract_core::ops::source::TypedSource;

/// What a group's units are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Hidden channels of an FFN.
    Ffn,
    /// Heads of an attention block.
    Heads,
}

/// As in plans and tables: `ffn` or `heads`.
impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that table columns (`{:<6}`) line up.
        f.pad(match self {
            Kind::Ffn => "ffn",
            Kind::Heads => "heads",
        })
    }
}

/// Where units lie along a tensor: unit `u` is the slices `u·block .. (u+1)·block` of `axis`,
/// once the `merged` adjacent axes starting at `axis` are seen as one (grouped-query heads lie
/// along KV group × head within group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units {
    /// The (first) axis the units lie along.
    pub axis: usize,
    /// Slices per unit (1 for channels, the head size for heads merged into channels).
    pub block: usize,
    /// How many adjacent axes, from `axis`, the units span (1 but for grouped-query heads).
    pub merged: usize,
}

impl Units {
    /// Units one slice each along one axis.
    pub fn along(axis: usize) -> Units {
        Units {
            axis,
            block: 1,
            merged: 1,
        }
    }

    /// The slice indices of the given units (in the merged view).
    pub fn slices(&self, units: &[usize]) -> Vec<usize> {
        units
            .iter()
            .flat_map(|u| u * self.block..(u + 1) * self.block)
            .collect()
    }

    /// The tensor with the units' axes merged into one, so that [`Units::slices`] index its
    /// `axis` (the tensor itself when the units span one axis).
    pub fn view(&self, tensor: &Tensor) -> TractResult<Tensor> {
        if self.merged == 1 {
            return Ok(tensor.clone());
        }
        let shape = tensor.shape();
        ensure!(
            self.axis + self.merged <= shape.len(),
            "units beyond the tensor's rank"
        );
        let mut merged: Vec<usize> = shape[..self.axis].to_vec();
        merged.push(shape[self.axis..self.axis + self.merged].iter().product());
        merged.extend_from_slice(&shape[self.axis + self.merged..]);
        tensor.clone().into_shape(&merged)
    }

    /// The slices of the given units, in a layout of the tensor's rank: units that span
    /// several axes (one slice each) come along the first of them, the others of size 1, so an
    /// EinSum pairing them with another selection of the same units contracts them unit by unit.
    pub fn select(&self, tensor: &Tensor, units: &[usize]) -> TractResult<Tensor> {
        let view = self.view(tensor)?;
        let selected = crate::util::slices::select_slices(&view, self.axis, &self.slices(units))?;
        if self.merged == 1 {
            return Ok(selected);
        }
        let mut shape = selected.shape().to_vec();
        for _ in 1..self.merged {
            shape.insert(self.axis + 1, 1);
        }
        selected.into_shape(&shape)
    }

    /// The tensor with the given units' slices zeroed.
    pub fn zeroed(&self, tensor: &Tensor, units: &[usize]) -> TractResult<Tensor> {
        let mut view = self.view(tensor)?.cast_to::<f32>()?.into_owned();
        let (outer, size, inner) = around(view.shape(), self.axis);
        {
            let mut plain = view.try_as_plain_ram_mut()?;
            let data = plain.as_slice_mut::<f32>()?;
            fill_runs(data, outer, size, inner, &self.slices(units), 0.0);
        }
        view.cast_to_dt(tensor.datum_type())?
            .into_owned()
            .into_shape(tensor.shape())
    }
}

/// One group of removable units.
#[derive(Clone, Debug)]
pub struct Group {
    /// FFN channels or heads.
    pub kind: Kind,
    /// Position among the model's groups of its kind, in evaluation order.
    pub layer: usize,
    /// The consumer's node name.
    pub name: String,
    /// Number of units (channels, or query heads).
    pub units: usize,
    /// Heads: the KV heads the query heads share (as many as the query heads without grouping);
    /// FFN: the channels.
    pub kv_heads: usize,
    /// The consumer EinSum node and its constant weight node.
    pub consumer: usize,
    /// The consumer's constant weight node.
    pub weight: usize,
    /// Where the units lie in that weight.
    pub weight_units: Units,
    /// The consumer's computed input and where the units lie in it.
    pub activation: OutletId,
    /// Where the units lie in the consumer's input.
    pub activation_units: Units,
    /// Weights of the layers computing the units (FFN first layers; the V projection), with
    /// where the units lie in each.
    pub producers: Vec<(usize, Units)>,
    /// The Add node putting a constant bias on the consumer's output, and that constant's slot.
    pub bias: Option<(usize, usize)>,
    /// Linear layers and constants of the group (for sizes in the report).
    pub linears: Vec<usize>,
    /// Constant nodes of the group (weights and biases).
    pub consts: Vec<usize>,
}

fn const_input(model: &TypedModel, node: &TypedNode) -> Option<usize> {
    node.inputs
        .iter()
        .position(|i| model.node(i.node).op_is::<Const>())
}

/// A linear layer: a plain two-operand EinSum with one constant operand.
fn is_linear(model: &TypedModel, node: &TypedNode) -> bool {
    node.op_as::<EinSum>().is_some_and(|e| e.q_params.is_none())
        && node.inputs.len() == 2
        && const_input(model, node).is_some()
}

fn dim(model: &TypedModel, outlet: OutletId, axis: usize) -> Option<usize> {
    model
        .outlet_fact(outlet)
        .ok()?
        .shape
        .get(axis)?
        .to_usize()
        .ok()
}

/// Letters an EinSum sums over (absent from the output), ignoring size-1 axes of one operand
/// merely dropped.
fn contracted(model: &TypedModel, node: &TypedNode) -> Vec<Axis> {
    let Some(einsum) = node.op_as::<EinSum>() else {
        return vec![];
    };
    einsum
        .axes
        .iter_all_axes()
        .filter(|l| l.outputs[0].is_empty())
        .filter(|l| {
            // Shared by both operands (even slimmed to one unit), or summed over for real.
            let both = (0..node.inputs.len()).all(|slot| !l.inputs[slot].is_empty());
            both || (0..node.inputs.len()).any(|slot| {
                l.inputs[slot]
                    .iter()
                    .any(|&a| dim(model, node.inputs[slot], a) != Some(1))
            })
        })
        .cloned()
        .collect()
}

/// A consumer whose weight has whole zero input channels: what structured pruning leaves for
/// slimming to cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZeroInputs {
    /// The consumer's node.
    pub node: String,
    /// Its input channels whose weights are all zero.
    pub zero: usize,
    /// Its input channels.
    pub channels: usize,
}

/// The input channels of the convolution or linear layer named `layer` (or rebuilt from it:
/// `layer.kept`) in `model`: how many a slimmed layer kept.
pub fn layer_input_channels(model: &TypedModel, layer: &str) -> Option<usize> {
    let node = model
        .nodes()
        .iter()
        .find(|n| base_name(&n.name) == base_name(layer))?;
    if let Some(conv) = node.op_as::<Conv>() {
        return Some(conv.input_channels());
    }
    let slot = const_input(model, node).filter(|_| is_linear(model, node))?;
    let axis = *contracted(model, node).first()?.inputs[slot].first()?;
    dim(model, node.inputs[slot], axis)
}

/// The consumers of `model` — linear layers (along each axis they contract) and convolutions —
/// whose constant weight has whole zero input channels, in model order.
pub fn zero_inputs(model: &TypedModel) -> Vec<ZeroInputs> {
    in_eval_order(model, zero_inputs_of)
}

/// What `found` finds at each node of `model`, in evaluation order.
fn in_eval_order<T>(
    model: &TypedModel,
    found: impl Fn(&TypedModel, &TypedNode) -> Option<T>,
) -> Vec<T> {
    let order = model.eval_order().unwrap_or_default();
    order
        .into_iter()
        .filter_map(|id| found(model, model.node(id)))
        .collect()
}

fn zero_inputs_of(model: &TypedModel, node: &TypedNode) -> Option<ZeroInputs> {
    if let Some(conv) = node.op_as::<Conv>() {
        let kernel = const_value(model, node.inputs.get(1)?)?;
        return conv_zero_inputs(node, conv, &kernel);
    }
    if !is_linear(model, node) {
        return None;
    }
    let slot = const_input(model, node)?;
    let weight = const_value(model, &node.inputs[slot])?;
    let zeros = zero_slices_of(&weight);
    contracted(model, node)
        .iter()
        .filter_map(|l| l.inputs[slot].first().copied())
        .map(|axis| ZeroInputs {
            node: node.name.clone(),
            zero: zeros[axis].len(),
            channels: weight.shape()[axis],
        })
        .find(|z| z.zero > 0)
}

/// A convolution's input channel `c` of group `g` is unread when the kernel rows of `g` are
/// zero at `c`'s position within the group (all of one input slice of the kernel, for one group).
fn conv_zero_inputs(node: &TypedNode, conv: &Conv, kernel: &Tensor) -> Option<ZeroInputs> {
    let (o_axis, i_axis) = (
        conv.kernel_fmt.o_axis(kernel.shape()),
        conv.kernel_fmt.i_axis(kernel.shape()),
    );
    let view = kernel.cast_to::<f32>().ok()?;
    let view = view.to_plain_array_view::<f32>().ok()?;
    let (rows, in_g) = (kernel.shape()[o_axis], kernel.shape()[i_axis]);
    let rows_per_group = rows / conv.group;
    let unread = |c: usize| {
        let (g, j) = (c / in_g, c % in_g);
        let slice = view.index_axis(tract_ndarray::Axis(i_axis), j);
        let o_axis = if o_axis > i_axis { o_axis - 1 } else { o_axis };
        (g * rows_per_group..(g + 1) * rows_per_group).all(|o| {
            slice
                .index_axis(tract_ndarray::Axis(o_axis), o)
                .iter()
                .all(|v| *v == 0.0)
        })
    };
    let channels = conv.input_channels();
    let zero = (0..channels).filter(|&c| unread(c)).count();
    (zero > 0).then(|| ZeroInputs {
        node: node.name.clone(),
        zero,
        channels,
    })
}

/// Where a restriction of a layer's input channels stops, walking up from the layer through
/// ops that carry channels one to one: the node named, and why. It names the first obstacle a
/// reader of `show` should look at, not a proof that no rule could go further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestrictionStop {
    /// The node where the restriction stops.
    pub node: String,
    /// Why it stops there.
    pub reason: String,
}

impl std::fmt::Display for RestrictionStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.node, self.reason)
    }
}

/// Where slimming stopped restricting the inputs of the layer named `layer` (or rebuilt from
/// it) in `model` (slimmed, or the original when nothing was cut): the layer itself when it is
/// a grouped conv (whose inputs go equally in every group or in whole groups), else where a
/// walk up its input channels ends: the first node above it whose output another node reads
/// too, or that carries no channels one for one (no activation, constant-operand op, pooling,
/// padding, resampling or depthwise conv).
pub fn restriction_stop(model: &TypedModel, layer: &str) -> Option<RestrictionStop> {
    let reader = model
        .nodes()
        .iter()
        .find(|n| base_name(&n.name) == base_name(layer))?;
    let (node, reason) = match reader.op_as::<Conv>().filter(|c| c.group > 1) {
        Some(conv) => (
            reader,
            format!(
                "a conv of {} groups drops inputs equally in every group or in whole groups",
                conv.group
            ),
        ),
        None => match channel_origin(model, reader)?.0 {
            Origin::Shared { node, other } => {
                (node, format!("its output is also read by `{}`", other.name))
            }
            Origin::Input(node) => (node, "a model input".into()),
            Origin::Layer(node) => (
                node,
                "it computes the channels, and slimming kept them (no saving)".into(),
            ),
            Origin::Combined(node) => (
                node,
                "it combines two computed tensors, which must both lose the channels".into(),
            ),
            Origin::Other(node) => (
                node,
                format!("{} (no channel restriction crosses it)", node.op.name()),
            ),
        },
    };
    Some(RestrictionStop {
        node: node.name.clone(),
        reason,
    })
}

/// Where a layer's input channels come from, walking up through ops that carry them one for
/// one ([`channel_carrier_input`]) as long as nothing else reads them.
enum Origin<'m> {
    /// A node whose output another node reads too.
    Shared {
        node: &'m TypedNode,
        other: &'m TypedNode,
    },
    /// A model input.
    Input(&'m TypedNode),
    /// A convolution or linear layer computing the channels.
    Layer(&'m TypedNode),
    /// A binary op of two computed tensors (a residual add).
    Combined(&'m TypedNode),
    /// An op no channel restriction crosses.
    Other(&'m TypedNode),
}

/// The [`Origin`] of the input channels of `layer` (a convolution or linear layer), and whether
/// the walk crossed a convolution (a depthwise one).
fn channel_origin<'m>(model: &'m TypedModel, layer: &'m TypedNode) -> Option<(Origin<'m>, bool)> {
    let axis = input_channel_axis(model, layer)?;
    let mut reader = layer;
    let mut outlet = *layer
        .inputs
        .iter()
        .find(|i| !model.node(i.node).op_is::<Const>())?;
    let mut crossed_conv = false;
    loop {
        let producer = model.node(outlet.node);
        let successors = model.outlet_successors(outlet);
        if let Some(other) = successors.iter().find(|i| i.node != reader.id) {
            let other = model.node(other.node);
            return Some((
                Origin::Shared {
                    node: producer,
                    other,
                },
                crossed_conv,
            ));
        }
        let origin = match channel_carrier_input(model, producer, axis) {
            Some(input) => {
                crossed_conv |= producer.op_is::<Conv>();
                (reader, outlet) = (producer, input);
                continue;
            }
            None if producer.op_is::<TypedSource>() => Origin::Input(producer),
            None if producer.op_is::<Conv>() || is_linear(model, producer) => {
                Origin::Layer(producer)
            }
            None if producer.op_is::<TypedBinOp>() => Origin::Combined(producer),
            None => Origin::Other(producer),
        };
        return Some((origin, crossed_conv));
    }
}

/// Channels of a convolutional network that one layer computes and another reads, carried one
/// for one between them (through activations, constant-operand ops, poolings, paddings,
/// resamplings and depthwise convs, nothing else reading them): the unit of channel pruning,
/// listed by `show` and `plan` as FFN groups are. A convolution reads them, computes them or
/// lies between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelGroup {
    /// The layer reading the channels (a convolution or a linear layer).
    pub consumer: String,
    /// The layer computing them.
    pub producer: String,
    /// How many channels.
    pub channels: usize,
    /// Those of them the consumer's weights do not read (all zero).
    pub zero: usize,
}

/// The channel groups of `model`, by consumer in evaluation order.
pub fn channel_groups(model: &TypedModel) -> Vec<ChannelGroup> {
    in_eval_order(model, channel_group)
}

fn channel_group(model: &TypedModel, consumer: &TypedNode) -> Option<ChannelGroup> {
    let conv = consumer.op_as::<Conv>();
    if conv.is_some_and(is_depthwise) || !(conv.is_some() || is_linear(model, consumer)) {
        return None;
    }
    let (Origin::Layer(producer), crossed_conv) = channel_origin(model, consumer)? else {
        return None;
    };
    if !(conv.is_some() || crossed_conv || producer.op_is::<Conv>()) {
        return None;
    }
    Some(ChannelGroup {
        consumer: consumer.name.clone(),
        producer: producer.name.clone(),
        channels: layer_input_channels(model, &consumer.name)?,
        zero: zero_inputs_of(model, consumer).map_or(0, |z| z.zero),
    })
}

/// A depthwise convolution: each output channel reads its own input channel alone, so it
/// carries channels one for one.
fn is_depthwise(conv: &Conv) -> bool {
    conv.group == conv.input_channels() && conv.group == conv.output_channels()
}

/// The axis of a layer's data input that holds its input channels: a convolution's channel
/// axis, or the axis a linear layer contracts.
fn input_channel_axis(model: &TypedModel, node: &TypedNode) -> Option<usize> {
    if let Some(conv) = node.op_as::<Conv>() {
        return Some(ops::conv_channel_axis(conv));
    }
    let data = 1 - const_input(model, node).filter(|_| is_linear(model, node))?;
    contracted(model, node).first()?.inputs[data]
        .first()
        .copied()
}

/// The input of `node` that carries channels (along `axis`, which it keeps) one for one to
/// its output: that of an element-wise op, of an op whose other operands are constants, of an
/// op working along other axes (a pooling, an upsampling, a resampling by constant scales), or
/// of a depthwise convolution.
fn channel_carrier_input(model: &TypedModel, node: &TypedNode, axis: usize) -> Option<OutletId> {
    let op = node.op.as_ref();
    let computed: Vec<OutletId> = node
        .inputs
        .iter()
        .filter(|i| !model.node(i.node).op_is::<Const>())
        .copied()
        .collect();
    let carries = ops::is_map(op)
        || op.is::<TypedBinOp>()
        || op
            .downcast_ref::<Conv>()
            .is_some_and(|c| is_depthwise(c) && ops::conv_channel_axis(c) == axis)
        || (ops::is_along(op) && !ops::along_axes(op).contains(&axis))
        || constant_resize(model, node).is_some_and(|r| !ops::along_axes(&r).contains(&axis));
    match computed[..] {
        [input] if carries => Some(input),
        _ => None,
    }
}

/// The node as the along-op lowering makes of it, if it is a resampling by constant scales.
fn constant_resize(model: &TypedModel, node: &TypedNode) -> Option<ops::ConstantResize> {
    let constants = node.inputs.get(1..)?.iter().map(|i| const_value(model, i));
    ops::ConstantResize::of(node.op.as_ref(), constants.collect::<Option<_>>()?)
}

fn const_value(model: &TypedModel, outlet: &OutletId) -> Option<Arc<Tensor>> {
    Some(model.node(outlet.node).op_as::<Const>()?.val().clone())
}

/// The axis of a producer linear's constant weight that carries `size` output channels.
fn producer_units(
    model: &TypedModel,
    node: &TypedNode,
    size: usize,
    block: usize,
) -> Option<Units> {
    let slot = const_input(model, node)?;
    let einsum = node.op_as::<EinSum>()?;
    einsum
        .axes
        .iter_all_axes()
        .filter(|l| !l.outputs[0].is_empty())
        .filter_map(|l| l.inputs[slot].first().copied())
        .find(|&a| dim(model, node.inputs[slot], a) == Some(size))
        .map(|axis| Units {
            axis,
            block,
            merged: 1,
        })
}

/// The bias Add right after `node`: an Add with a constant operand.
fn bias_of(model: &TypedModel, node: usize) -> Option<(usize, usize)> {
    let succ = &model.node(node).outputs[0].successors;
    let [only] = succ.as_slice() else {
        return None;
    };
    let add = model.node(only.node);
    let bin = add.op_as::<TypedBinOp>()?;
    if bin.0.name() != "Add" {
        return None;
    }
    Some((add.id, const_input(model, add)?))
}

/// The FFN group consuming through `consumer`, if it is one.
fn ffn_group(model: &TypedModel, consumer: &TypedNode) -> Option<Group> {
    let weight_slot = const_input(model, consumer)?;
    let [letter] = contracted(model, consumer).try_into().ok()?;
    let activation = consumer.inputs[1 - weight_slot];
    let weight_axis = *letter.inputs[weight_slot].first()?;
    let activation_axis = *letter.inputs[1 - weight_slot].first()?;
    let units = dim(model, consumer.inputs[weight_slot], weight_axis)?;
    let mut group = Group {
        kind: Kind::Ffn,
        layer: 0,
        name: consumer.name.clone(),
        units,
        kv_heads: units,
        consumer: consumer.id,
        weight: consumer.inputs[weight_slot].node,
        weight_units: Units::along(weight_axis),
        activation,
        activation_units: Units::along(activation_axis),
        producers: vec![],
        bias: bias_of(model, consumer.id),
        linears: vec![consumer.id],
        consts: vec![consumer.inputs[weight_slot].node],
    };
    let mut frontier = vec![activation.node];
    let mut seen = HashSet::new();
    while let Some(id) = frontier.pop() {
        if !seen.insert(id) {
            continue;
        }
        let node = model.node(id);
        if node.op_is::<Const>() {
            group.consts.push(id);
        } else if is_linear(model, node) {
            let weight = node.inputs[const_input(model, node)?].node;
            group.linears.push(id);
            group.consts.push(weight);
            if let Some(u) = producer_units(model, node, units, 1) {
                group.producers.push((weight, u));
            }
        } else if ops::is_map(node.op.as_op())
            || node.op_is::<TypedBinOp>()
            || node.op_is::<AxisOp>()
            || node.op_is::<Gather>()
        {
            frontier.extend(node.inputs.iter().map(|i| i.node));
        } else {
            // The units are computed from something else too (a model input, a norm, the
            // residual stream): they are not the producers' to remove.
            return None;
        }
    }
    (group.linears.len() > 1).then_some(group)
}

/// Whether `outlet` holds attention probabilities: a softmax's output, possibly through the NaN
/// guard of sdpa exports (`where(isnan(p), 0, p)`, whose last operand is `p`), reshapes and
/// gathers.
fn is_probabilities(model: &TypedModel, outlet: OutletId) -> bool {
    let node = model.node(outlet.node);
    if node.op_is::<Softmax>() {
        true
    } else if node.op_is::<Iff>() && node.inputs.len() == 3 {
        is_probabilities(model, node.inputs[2])
    } else if node.op_is::<AxisOp>() || node.op_is::<Gather>() {
        // Reshapes, and gathers of some heads (a slimmed model's).
        is_probabilities(model, node.inputs[0])
    } else {
        false
    }
}

/// The heads of a softmax · V product, as its output axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadAxes {
    /// The first output axis carrying heads.
    pub axis: usize,
    /// How many adjacent output axes the heads span: 2 when grouped-query heads are split in
    /// KV group × head within group.
    pub axes: usize,
    /// KV heads (all heads without grouping).
    pub kv_heads: usize,
    /// Query heads per KV head (1 without grouping).
    pub per_kv: usize,
}

impl HeadAxes {
    /// Query heads.
    pub fn heads(&self) -> usize {
        self.kv_heads * self.per_kv
    }
}

/// For a softmax · V EinSum: the axes of its heads, those an output projection contracts. Heads
/// are the probabilities' axes the output keeps, less the query axis and the batch (see
/// [`read_head_axes`]). With one new token tract may drop the query axis, and the axis just
/// before the key axis is then a head axis (the heads within a KV group): the reading without a
/// query axis is kept where an output projection contracts its heads, else the query axis is
/// the one before the key axis.
pub fn head_axes(model: &TypedModel, node: &TypedNode) -> Option<HeadAxes> {
    read_head_axes(model, node, QueryAxis::Dropped)
        .filter(|heads| heads_consumer(model, node, heads).is_some())
        .or_else(|| read_head_axes(model, node, QueryAxis::BeforeKey))
}

/// Where the query axis of attention probabilities is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueryAxis {
    /// Just before the key axis the product contracts.
    BeforeKey,
    /// Not there (one query, its axis dropped).
    Dropped,
}

/// The heads of a softmax · V EinSum with the query axis where `query` says: the
/// probabilities' axes the output keeps, less the query axis and the batch (the probabilities'
/// first axis, when heads are found besides it). With grouped-query attention there are two,
/// adjacent in the output: the KV group, which V has too, then the head within the group,
/// which V lacks.
fn read_head_axes(model: &TypedModel, node: &TypedNode, query: QueryAxis) -> Option<HeadAxes> {
    let einsum = node.op_as::<EinSum>()?;
    if node.inputs.len() != 2 {
        return None;
    }
    let probs = (0..2).find(|&s| is_probabilities(model, node.inputs[s]))?;
    let values = 1 - probs;
    let size = |l: &Axis| dim(model, node.inputs[probs], *l.inputs[probs].first()?);
    let key = einsum
        .axes
        .iter_all_axes()
        .find(|l| l.outputs[0].is_empty() && l.inputs[values].len() == 1 && size(l) != Some(1))?;
    let query_axis = match query {
        QueryAxis::BeforeKey => Some(key.inputs[probs].first()?.checked_sub(1)?),
        QueryAxis::Dropped => None,
    };
    let mut heads: Vec<&Axis> = einsum
        .axes
        .iter_all_axes()
        .filter(|l| l.inputs[probs].len() == 1 && l.outputs[0].len() == 1)
        .filter(|l| Some(l.inputs[probs][0]) != query_axis)
        .collect();
    if heads.len() > 1 {
        heads.retain(|l| l.inputs[probs][0] != 0);
    }
    // Size-1 axes are batch-like, unless they are a grouping's KV axis (a slimmed model may keep
    // one KV head).
    if heads.len() > 2 || (heads.len() == 2 && heads[0].inputs[values].is_empty()) {
        heads.retain(|l| size(l) != Some(1));
    }
    heads.sort_by_key(|l| l.outputs[0][0]);
    match heads.as_slice() {
        // One head axis: every head reads its own V, or (one KV head left) all read the same.
        [h] => {
            let shared = h.inputs[values].is_empty();
            Some(HeadAxes {
                axis: h.outputs[0][0],
                axes: 1,
                kv_heads: if shared { 1 } else { size(h)? },
                per_kv: if shared { size(h)? } else { 1 },
            })
        }
        [group, within]
            if within.outputs[0][0] == group.outputs[0][0] + 1
                && group.inputs[values].len() == 1
                && within.inputs[values].is_empty() =>
        {
            Some(HeadAxes {
                axis: group.outputs[0][0],
                axes: 2,
                kv_heads: size(group)?,
                per_kv: size(within)?,
            })
        }
        _ => None,
    }
}

/// Follows units forward from `outlet` through axis bookkeeping (its only consumer each time)
/// to the linear layer contracting them: that node, and where the units lie in its input.
fn follow_to_consumer(
    model: &TypedModel,
    mut outlet: OutletId,
    mut units: Units,
) -> Option<(usize, OutletId, Units)> {
    loop {
        let successors = model.outlet_successors(outlet);
        // Several linear readers (extraction may compute a restricted copy of the output
        // projection beside the full one) share the units: the first one is the consumer.
        let next = match successors {
            [next] => next,
            [first, ..]
                if successors
                    .iter()
                    .all(|s| is_linear(model, model.node(s.node))) =>
            {
                first
            }
            _ => return None,
        };
        let node = model.node(next.node);
        if is_linear(model, node) {
            return Some((node.id, outlet, units));
        }
        let op = node.op_as::<AxisOp>()?;
        let spanned = units.axis..units.axis + units.merged;
        units = match op {
            // A size-1 axis of the units dropped: a grouping down to one KV head, or a single
            // head merged with its head size (a reshape [1, d] → [d], as tract simplifies it).
            AxisOp::Rm(ix) if spanned.contains(ix) => {
                if dim(model, outlet, *ix) != Some(1) {
                    return None;
                }
                if units.merged > 1 {
                    Units {
                        merged: units.merged - 1,
                        ..units
                    }
                } else {
                    Units {
                        axis: *ix,
                        block: units.block * dim(model, outlet, ix + 1)?,
                        merged: 1,
                    }
                }
            }
            // Merging the units' axes and the head size into channels.
            AxisOp::Reshape(at, from, to)
                if units.axis == *at && to.len() == 1 && from.len() > units.merged =>
            {
                let inner: usize = from[units.merged..]
                    .iter()
                    .map(|d| d.to_usize().ok())
                    .product::<Option<usize>>()?;
                Units {
                    axis: *at,
                    block: units.block * inner,
                    merged: 1,
                }
            }
            _ => {
                let axis = op.transform_axis(units.axis)?;
                // Merged axes must stay adjacent and in order.
                let adjacent =
                    (1..units.merged).all(|k| op.transform_axis(units.axis + k) == Some(axis + k));
                if !adjacent {
                    return None;
                }
                Units { axis, ..units }
            }
        };
        outlet = OutletId::new(node.id, 0);
    }
}

/// The V projection feeding a softmax · V EinSum's values operand (through axis bookkeeping,
/// bias adds, broadcasts and gathers): its node.
fn value_projection(model: &TypedModel, mut outlet: OutletId) -> Option<&TypedNode> {
    loop {
        let node = model.node(outlet.node);
        if is_linear(model, node) {
            return Some(node);
        }
        let passes = node.op_is::<AxisOp>()
            || node.op_is::<TypedBinOp>()
            || node.op_is::<Cast>()
            || node.op_is::<MultiBroadcastTo>()
            || node.op_is::<Gather>();
        if !passes {
            return None;
        }
        outlet = *node
            .inputs
            .iter()
            .find(|i| !model.node(i.node).op_is::<Const>())?;
    }
}

/// The V projection's weight and where its KV heads lie in it, and how many there are: its
/// output channels (the weight's axes carried to the output) over the head size.
fn value_heads(
    model: &TypedModel,
    values: OutletId,
    head_dim: usize,
) -> Option<(usize, Units, usize)> {
    let node = value_projection(model, values)?;
    let slot = const_input(model, node)?;
    let einsum = node.op_as::<EinSum>()?;
    let weight = node.inputs[slot];
    let channel_axes: Vec<usize> = einsum
        .axes
        .iter_all_axes()
        .filter(|l| !l.outputs[0].is_empty() && l.inputs[1 - slot].is_empty())
        .filter_map(|l| l.inputs[slot].first().copied())
        .collect();
    let width: usize = channel_axes
        .iter()
        .map(|&a| dim(model, weight, a))
        .product::<Option<usize>>()?;
    if head_dim == 0 || !width.is_multiple_of(head_dim) {
        return None;
    }
    let kv_heads = width / head_dim;
    let units = producer_units(model, node, width, head_dim)
        .or_else(|| producer_units(model, node, kv_heads, 1))?;
    Some((weight.node, units, kv_heads))
}

/// The V projection of a softmax · V product (its weight and where its KV heads lie in it, when
/// found) and the number of KV heads: the projection's output channels over the head size, the
/// values' axis the output carries that is neither heads nor a token axis.
fn kv_heads_of(
    model: &TypedModel,
    product: &TypedNode,
    heads: &HeadAxes,
) -> Option<(Option<(usize, Units)>, usize)> {
    let probs = (0..2).find(|&s| is_probabilities(model, product.inputs[s]))?;
    let values = product.inputs[1 - probs];
    let value_fact = model.outlet_fact(values).ok()?;
    let head_dim = product
        .op_as::<EinSum>()?
        .axes
        .iter_all_axes()
        .filter(|l| l.inputs[probs].is_empty() && !l.outputs[0].is_empty())
        .filter_map(|l| l.inputs[1 - probs].first())
        .filter_map(|&a| value_fact.shape[a].to_usize().ok())
        .product::<usize>();
    match value_heads(model, values, head_dim) {
        Some((weight, units, kv)) => Some((Some((weight, units)), kv)),
        None => Some((None, heads.kv_heads)),
    }
}

/// An attention block as the report counts it: its softmax · V product, the linear layer its
/// heads reach (through axis bookkeeping and gathers), and its query and KV heads. Unlike a
/// [`Group`], the heads need not line up with the consumer's weight (a slimmed model may gather
/// single channels of some heads).
#[derive(Clone, Debug)]
pub struct AttentionBlock {
    /// The softmax · V product.
    pub product: usize,
    /// The linear layer consuming its heads.
    pub consumer: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
}

/// The attention blocks of a model, in evaluation order.
pub fn attention_blocks(model: &TypedModel) -> TractResult<Vec<AttentionBlock>> {
    let mut blocks = vec![];
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(heads) = head_axes(model, node) else {
            continue;
        };
        let Some(consumer) = reading_linear(model, OutletId::new(id, 0)) else {
            continue;
        };
        let Some((_, kv_heads)) = kv_heads_of(model, node, &heads) else {
            continue;
        };
        blocks.push(AttentionBlock {
            product: id,
            consumer,
            heads: heads.heads(),
            kv_heads,
        });
    }
    Ok(blocks)
}

/// The first linear layer reading `outlet` through axis bookkeeping and gathers.
fn reading_linear(model: &TypedModel, mut outlet: OutletId) -> Option<usize> {
    loop {
        let next = model.outlet_successors(outlet).first()?;
        let node = model.node(next.node);
        if is_linear(model, node) {
            return Some(node.id);
        }
        if !(node.op_is::<AxisOp>() || node.op_is::<Gather>()) || next.slot != 0 {
            return None;
        }
        outlet = OutletId::new(node.id, 0);
    }
}

/// The heads group of a softmax · V EinSum, if its heads reach an output projection.
fn heads_group(model: &TypedModel, product: &TypedNode) -> Option<Group> {
    let heads = head_axes(model, product)?;
    let found = heads_consumer(model, product, &heads)?;
    let consumer = model.node(found.consumer);
    let (value, kv_heads) = kv_heads_of(model, product, &heads)?;
    let producers = value.into_iter().collect();
    Some(Group {
        kind: Kind::Heads,
        layer: 0,
        name: consumer.name.clone(),
        units: heads.heads(),
        kv_heads,
        consumer: found.consumer,
        weight: consumer.inputs[found.weight_slot].node,
        weight_units: found.weight_units,
        activation: found.activation,
        activation_units: found.activation_units,
        producers,
        bias: bias_of(model, found.consumer),
        linears: vec![product.id, found.consumer],
        consts: vec![consumer.inputs[found.weight_slot].node],
    })
}

/// The output projection contracting a softmax · V product's heads, and where they lie in it.
struct HeadsConsumer {
    consumer: usize,
    weight_slot: usize,
    weight_units: Units,
    activation: OutletId,
    activation_units: Units,
}

/// The output projection of `heads` of `product`: reached through axis bookkeeping, it
/// contracts the axes the heads span against adjacent weight axes, in order, as many rows as
/// there are heads times a block.
fn heads_consumer(
    model: &TypedModel,
    product: &TypedNode,
    heads: &HeadAxes,
) -> Option<HeadsConsumer> {
    let start = Units {
        axis: heads.axis,
        block: 1,
        merged: heads.axes,
    };
    let (consumer_id, activation, activation_units) =
        follow_to_consumer(model, OutletId::new(product.id, 0), start)?;
    let consumer = model.node(consumer_id);
    let weight_slot = const_input(model, consumer)?;
    let einsum = consumer.op_as::<EinSum>()?;
    let input_slot = 1 - weight_slot;
    // Each axis the units span must be contracted against adjacent weight axes, in order.
    let weight_axes: Vec<usize> = (0..activation_units.merged)
        .map(|k| {
            let letter = einsum
                .axes
                .axis((InOut::In(input_slot), activation_units.axis + k))
                .ok()?;
            if !letter.outputs[0].is_empty() {
                return None;
            }
            letter.inputs[weight_slot].first().copied()
        })
        .collect::<Option<_>>()?;
    if weight_axes.windows(2).any(|w| w[1] != w[0] + 1) {
        return None;
    }
    let weight_units = Units {
        axis: weight_axes[0],
        block: activation_units.block,
        merged: activation_units.merged,
    };
    let weight_fact = model.outlet_fact(consumer.inputs[weight_slot]).ok()?;
    let spanned: usize = weight_axes
        .iter()
        .map(|&a| weight_fact.shape[a].to_usize().ok())
        .product::<Option<usize>>()?;
    (spanned == heads.heads() * weight_units.block).then_some(HeadsConsumer {
        consumer: consumer_id,
        weight_slot,
        weight_units,
        activation,
        activation_units,
    })
}

/// Every group of the model: FFN and heads groups, each numbered in evaluation order.
pub fn groups(model: &TypedModel) -> TractResult<Vec<Group>> {
    let mut found = vec![];
    let (mut ffn, mut heads) = (0, 0);
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(mut g) = heads_group(model, node) {
            g.layer = heads;
            heads += 1;
            found.push(g);
        } else if is_linear(model, node) {
            if let Some(mut g) = ffn_group(model, node) {
                g.layer = ffn;
                ffn += 1;
                found.push(g);
            }
        }
    }
    Ok(found)
}

/// A node name without the suffixes slimming and tract add to rebuilt nodes (`.kept`, `.slim`,
/// `.1`...), so a group is recognised after slimming.
pub fn base_name(name: &str) -> &str {
    let mut base = name;
    while let Some((head, tail)) = base.rsplit_once('.') {
        // A number tract appends to tell nodes apart (`N.1`), not the end of a range it names
        // a part by (`N.concat-einsum-I.0..4`).
        let numbered =
            !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) && !head.ends_with('.');
        let added = tail == "kept" || tail == "slim" || numbered;
        if !added || head.is_empty() {
            break;
        }
        base = head;
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::nn::SoftmaxKind;

    fn einsum(expr: &str) -> EinSum {
        EinSum::new(expr.parse().unwrap(), f32::datum_type())
    }

    /// One new token's grouped-query attention as tract leaves it when it drops the size-1
    /// query axis: probabilities `[batch, 2 KV groups, 7 heads each, keys]` times V `[batch, 2,
    /// keys, 4]`, merged into `[batch, 56]` for the output projection.
    fn one_token_gqa() -> TypedModel {
        let mut m = TypedModel::default();
        let scores = m.add_source("scores", f32::fact([1, 2, 7, 5])).unwrap();
        let softmax = Softmax {
            axes: tvec![3],
            quant_output_dt: None,
            kind: SoftmaxKind::default(),
        };
        let probs = m.wire_node("softmax", softmax, &[scores]).unwrap()[0];
        let v = m.add_source("v", f32::fact([1, 2, 5, 4])).unwrap();
        let context = m
            .wire_node("context", einsum("bgwk,bgkd->bgwd"), &[probs, v])
            .unwrap()[0];
        let merge = AxisOp::Reshape(1, tvec![2.into(), 7.into(), 4.into()], tvec![56.into()]);
        let merged = m.wire_node("merge", merge, &[context]).unwrap()[0];
        let w = m
            .add_const("o.w", Tensor::zero::<f32>(&[56, 8]).unwrap())
            .unwrap();
        let out = m.wire_node("o", einsum("bm,mn->bn"), &[merged, w]).unwrap()[0];
        m.select_output_outlets(&[out]).unwrap();
        m
    }

    /// A 1-D conv of `group` groups and kernel size 1, from `x`'s channels to `output`, whose
    /// kernel is zero at input position 0 of every group.
    fn conv(m: &mut TypedModel, name: &str, x: OutletId, output: usize, group: usize) -> OutletId {
        use tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
        use tract_core::ops::nn::DataFormat;
        let input = m.outlet_fact(x).unwrap().shape[1].to_usize().unwrap();
        let spec = PoolSpec::new(
            DataFormat::NCHW,
            tvec![1],
            PaddingSpec::Valid,
            None,
            None,
            input,
            output,
        );
        let kernel =
            tract_ndarray::Array3::from_shape_fn((output, input / group, 1), |(_, j, _)| {
                (j != 0) as u8 as f32
            })
            .into_tensor();
        let k = m.add_const(format!("{name}.k"), kernel).unwrap();
        let b = m
            .add_const(format!("{name}.b"), Tensor::zero::<f32>(&[output]).unwrap())
            .unwrap();
        let op = Conv::new(spec, KernelFormat::OIHW, group, None);
        m.wire_node(name, op, &[x, k, b]).unwrap()[0]
    }

    /// `x → producer → relu → consumer`, with `extra` wiring more between relu and the output.
    fn conv_chain(
        group: usize,
        extra: impl Fn(&mut TypedModel, OutletId) -> OutletId,
    ) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 4, 5])).unwrap();
        let produced = conv(&mut m, "producer", x, 4, 1);
        let zero = m.add_const("zero", tensor3(&[[[0f32]]])).unwrap();
        let relu = m
            .wire_node("relu", tract_core::ops::math::max(), &[produced, zero])
            .unwrap()[0];
        let read = extra(&mut m, relu);
        let out = conv(&mut m, "consumer", read, 2, group);
        m.select_output_outlets(&[out]).unwrap();
        m
    }

    #[test]
    fn base_names_drop_added_suffixes_but_not_the_range_a_part_is_named_by() {
        assert_eq!(base_name("/m/fc2/MatMul.kept.1"), "/m/fc2/MatMul");
        assert_eq!(base_name("layer.slim"), "layer");
        let part = "branch.einsum.concat-einsum-I.0..4";
        assert_eq!(base_name(part), part);
        assert_ne!(
            base_name(part),
            base_name("branch.einsum.concat-einsum-I.4..5")
        );
    }

    #[test]
    fn a_restriction_stops_where_something_else_reads_the_channels_or_at_a_grouped_conv() {
        let stop = |m: &TypedModel| restriction_stop(m, "consumer").unwrap();
        let plain = stop(&conv_chain(1, |_, relu| relu));
        assert_eq!(plain.node, "producer", "{plain}");
        let read_twice = conv_chain(1, |m, relu| {
            conv(m, "other", relu, 3, 1);
            relu
        });
        let twice = stop(&read_twice);
        assert_eq!(twice.node, "relu");
        assert!(twice.reason.contains("also read by `other`"), "{twice}");
        let residual = conv_chain(1, |m, relu| {
            let x = m.input_outlets().unwrap()[0];
            m.wire_node("residual", tract_core::ops::math::add(), &[relu, x])
                .unwrap()[0]
        });
        let residual = stop(&residual);
        assert_eq!(residual.node, "residual");
        assert!(
            residual.reason.contains("two computed tensors"),
            "{residual}"
        );
        let upsampled = stop(&conv_chain(1, |m, relu| {
            let scales = tvec![1, 1, 2];
            let op = tract_core::ops::nn::NearestUpsample { scales };
            m.wire_node("upsample", op, &[relu]).unwrap()[0]
        }));
        assert_eq!(upsampled.node, "producer", "{upsampled}");
        let grouped = stop(&conv_chain(2, |_, relu| relu));
        assert_eq!(grouped.node, "consumer");
        assert!(grouped.reason.contains("2 groups"), "{grouped}");
    }

    #[test]
    fn heads_are_read_where_a_one_token_query_axis_was_dropped() {
        let model = one_token_gqa();
        let found = groups(&model).unwrap();
        let heads: Vec<(usize, usize)> = found
            .iter()
            .filter(|g| g.kind == Kind::Heads)
            .map(|g| (g.units, g.kv_heads))
            .collect();
        // Not 2 units (the KV groups, taking the heads within a group for the query axis).
        assert_eq!(heads, [(14, 2)]);
    }
}
