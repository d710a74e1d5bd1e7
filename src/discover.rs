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
//! - Heads: a softmax · V EinSum (its heads are the axes both operands and the output share,
//!   less the scores' first axis, the batch, when there are several), followed through axis
//!   bookkeeping (the reshape merging heads × head_dim) to the output projection.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cast::Cast;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::konst::Const;
use tract_core::ops::nn::Softmax;

/// What a group's units are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Hidden channels of an FFN.
    Ffn,
    /// Heads of an attention block.
    Heads,
}

/// Where units lie along a tensor: unit `u` is the slices `u·block .. (u+1)·block` of `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units {
    /// The axis the units lie along.
    pub axis: usize,
    /// Slices per unit (1 for channels, the head size for heads merged into channels).
    pub block: usize,
}

impl Units {
    /// The slice indices of the given units.
    pub fn slices(&self, units: &[usize]) -> Vec<usize> {
        units
            .iter()
            .flat_map(|u| u * self.block..(u + 1) * self.block)
            .collect()
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
    /// Number of units (channels or heads).
    pub units: usize,
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

/// Letters an EinSum sums over (absent from the output), ignoring size-1 axes merely dropped.
fn contracted(model: &TypedModel, node: &TypedNode) -> Vec<Axis> {
    let Some(einsum) = node.op_as::<EinSum>() else {
        return vec![];
    };
    einsum
        .axes
        .iter_all_axes()
        .filter(|l| l.outputs[0].is_empty())
        .filter(|l| {
            (0..node.inputs.len()).any(|slot| {
                l.inputs[slot]
                    .iter()
                    .any(|&a| dim(model, node.inputs[slot], a) != Some(1))
            })
        })
        .cloned()
        .collect()
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
        .map(|axis| Units { axis, block })
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
        consumer: consumer.id,
        weight: consumer.inputs[weight_slot].node,
        weight_units: Units {
            axis: weight_axis,
            block: 1,
        },
        activation,
        activation_units: Units {
            axis: activation_axis,
            block: 1,
        },
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
        } else if node.op_is::<ElementWiseOp>()
            || node.op_is::<Cast>()
            || node.op_is::<TypedBinOp>()
            || node.op_is::<AxisOp>()
        {
            frontier.extend(node.inputs.iter().map(|i| i.node));
        }
    }
    (group.linears.len() > 1).then_some(group)
}

/// For a softmax · V EinSum: the output axis of its heads, and how many there are.
pub fn head_axis(model: &TypedModel, node: &TypedNode) -> Option<(usize, usize)> {
    let einsum = node.op_as::<EinSum>()?;
    if node.inputs.len() != 2 {
        return None;
    }
    let probs = node
        .inputs
        .iter()
        .position(|i| model.node(i.node).op_is::<Softmax>())?;
    let values = 1 - probs;
    let shared: Vec<(usize, usize)> = einsum
        .axes
        .iter_all_axes()
        .filter(|l| l.outputs[0].len() == 1 && l.inputs[values].len() == 1)
        .filter_map(|l| Some((*l.inputs[probs].first()?, l.outputs[0][0])))
        .collect();
    let heads: Vec<&(usize, usize)> = shared
        .iter()
        .filter(|(p, _)| shared.len() == 1 || *p != 0)
        .collect();
    let [(probs_axis, out_axis)] = heads.as_slice() else {
        return None;
    };
    Some((*out_axis, dim(model, node.inputs[probs], *probs_axis)?))
}

/// Follows units forward from `outlet` through axis bookkeeping (its only consumer each time)
/// to the linear layer contracting them: that node, and where the units lie in its input.
fn follow_to_consumer(
    model: &TypedModel,
    mut outlet: OutletId,
    mut units: Units,
) -> Option<(usize, OutletId, Units)> {
    loop {
        let [next] = model.outlet_successors(outlet) else {
            return None;
        };
        let node = model.node(next.node);
        if is_linear(model, node) {
            return Some((node.id, outlet, units));
        }
        let op = node.op_as::<AxisOp>()?;
        units = match op {
            AxisOp::Reshape(at, from, to) if units.axis == *at && to.len() == 1 => {
                let inner: usize = from[1..]
                    .iter()
                    .map(|d| d.to_usize().ok())
                    .product::<Option<usize>>()?;
                Units {
                    axis: *at,
                    block: units.block * inner,
                }
            }
            _ => Units {
                axis: op.transform_axis(units.axis)?,
                block: units.block,
            },
        };
        outlet = OutletId::new(node.id, 0);
    }
}

/// The V projection feeding a softmax · V EinSum's values operand: its weight and units.
fn value_projection(
    model: &TypedModel,
    mut outlet: OutletId,
    heads: usize,
    head_dim: usize,
) -> Option<(usize, Units)> {
    loop {
        let node = model.node(outlet.node);
        if is_linear(model, node) {
            let weight = node.inputs[const_input(model, node)?].node;
            let units = producer_units(model, node, heads * head_dim, head_dim)
                .or_else(|| producer_units(model, node, heads, 1))?;
            return Some((weight, units));
        }
        let passes = node.op_is::<AxisOp>() || node.op_is::<TypedBinOp>() || node.op_is::<Cast>();
        if !passes {
            return None;
        }
        outlet = *node
            .inputs
            .iter()
            .find(|i| !model.node(i.node).op_is::<Const>())?;
    }
}

/// The heads group of a softmax · V EinSum, if its heads reach an output projection.
fn heads_group(model: &TypedModel, product: &TypedNode) -> Option<Group> {
    let (axis, heads) = head_axis(model, product)?;
    let start = Units { axis, block: 1 };
    let (consumer_id, activation, activation_units) =
        follow_to_consumer(model, OutletId::new(product.id, 0), start)?;
    let consumer = model.node(consumer_id);
    let weight_slot = const_input(model, consumer)?;
    let einsum = consumer.op_as::<EinSum>()?;
    let input_slot = 1 - weight_slot;
    let letter = einsum
        .axes
        .axis((InOut::In(input_slot), activation_units.axis))
        .ok()?;
    if !letter.outputs[0].is_empty() {
        return None;
    }
    let weight_axis = *letter.inputs[weight_slot].first()?;
    let weight_units = Units {
        axis: weight_axis,
        block: activation_units.block,
    };
    if dim(model, consumer.inputs[weight_slot], weight_axis)? != heads * weight_units.block {
        return None;
    }
    let probs = product
        .inputs
        .iter()
        .position(|i| model.node(i.node).op_is::<Softmax>())?;
    let values = product.inputs[1 - probs];
    let value_fact = model.outlet_fact(values).ok()?;
    let values_letters = product.op_as::<EinSum>()?.axes.clone();
    // Head size: the values' axis carried to the output that is neither heads nor a token axis
    // shared with the probabilities.
    let head_dim = values_letters
        .iter_all_axes()
        .filter(|l| l.inputs[probs].is_empty() && !l.outputs[0].is_empty())
        .filter_map(|l| l.inputs[1 - probs].first())
        .filter_map(|&a| value_fact.shape[a].to_usize().ok())
        .product::<usize>();
    let producers = value_projection(model, values, heads, head_dim)
        .into_iter()
        .collect();
    Some(Group {
        kind: Kind::Heads,
        layer: 0,
        name: consumer.name.clone(),
        units: heads,
        consumer: consumer_id,
        weight: consumer.inputs[weight_slot].node,
        weight_units,
        activation,
        activation_units,
        producers,
        bias: bias_of(model, consumer_id),
        linears: vec![product.id, consumer_id],
        consts: vec![consumer.inputs[weight_slot].node],
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
        let added = tail == "kept" || tail == "slim" || tail.chars().all(|c| c.is_ascii_digit());
        if !added || head.is_empty() {
            break;
        }
        base = head;
    }
    base
}
