//! Known slices: slices of a computed tensor whose values are fixed by the weights alone, and how
//! ops carry them. Part of the e-class analysis ([`crate::egraph::analysis`]).
//!
//! A pruned linear layer whose weights into a channel are all zero still adds its bias there, so
//! the channel holds the same value at every position, and still does after an element-wise
//! activation. A head whose V projection is all zero has, because softmax rows sum to one, its V
//! bias as context vector at every query. A convolution's zero filter leaves its bias at every
//! position. Such slices carry no information; `rules/fold.rules` folds them into the next
//! layer's bias (a matrix product's: a k×k convolution with zero padding would see the padding
//! as well as the constant, so it keeps them).
//!
//! The value of known slice `i` of axis `a` is a tensor of the full rank with size 1 on `a` and,
//! on every other axis, either the tensor's size or 1 where the value does not vary along it.
//! Values of more than [`VALUE_LIMIT`] elements are not tracked. Constants are not tracked either:
//! [`slice_value`] reads their slices directly.

use crate::egraph::analysis::{const_of, SlimGraph};
use crate::egraph::lang::TensorLang;
use crate::model::ops;
use crate::util::slices::select_slices;
use egg::Id;
use std::sync::Arc;
use tract_core::internal::*;
use tract_core::ops::cnn::Conv;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Known slices per axis: `(index, value)`, sorted by index.
pub type KnownSlices = Vec<Vec<(usize, Arc<Tensor>)>>;

/// Largest value (in elements) tracked for one slice.
pub const VALUE_LIMIT: usize = 4096;

/// The value of slice `i` of `axis` of the tensor in e-class `id`, if known: a tracked slice, a
/// zero slice, or a slice of a constant.
pub fn slice_value(egraph: &SlimGraph, id: Id, axis: usize, i: usize) -> Option<Arc<Tensor>> {
    let info = &egraph[id].data;
    if let Some(v) = lookup(&info.known, axis, i) {
        return Some(v.clone());
    }
    let fact = info.fact.as_ref()?;
    if info.zeros_on(axis).binary_search(&i).is_ok() {
        let zero = Tensor::zero_dt(fact.datum_type, &vec![1; fact.rank()]).ok()?;
        return Some(Arc::new(zero));
    }
    let konst = const_of(egraph, id)?;
    let consts = &egraph.analysis.tables.consts;
    let shape = &consts.fact(konst).shape;
    let slice_len: usize = (0..shape.rank())
        .filter(|a| *a != axis)
        .map(|a| shape[a].to_usize().ok())
        .product::<Option<usize>>()?;
    if slice_len > VALUE_LIMIT {
        return None;
    }
    consts.select(konst, axis, &[i]).ok().map(Arc::new)
}

fn lookup(known: &KnownSlices, axis: usize, i: usize) -> Option<&Arc<Tensor>> {
    let slices = known.get(axis)?;
    let at = slices.binary_search_by_key(&i, |(j, _)| *j).ok()?;
    Some(&slices[at].1)
}

/// Indices of `axis` whose slice values [`slice_value`] can give; `None` means every index.
fn known_indices(egraph: &SlimGraph, id: Id, axis: usize) -> Option<Vec<usize>> {
    let info = &egraph[id].data;
    if info.dim(axis) == Some(1) || const_of(egraph, id).is_some() {
        return None;
    }
    let mut indices: Vec<usize> = info.zeros_on(axis).to_vec();
    if let Some(known) = info.known.get(axis) {
        indices.extend(known.iter().map(|(i, _)| *i));
    }
    indices.sort_unstable();
    indices.dedup();
    Some(indices)
}

/// Non-zero known slices of `axis` (zero slices are the zero analysis' business).
pub fn nonzero_known(egraph: &SlimGraph, id: Id, axis: usize) -> Vec<(usize, Arc<Tensor>)> {
    let info = &egraph[id].data;
    info.known
        .get(axis)
        .map(|k| {
            k.iter()
                .filter(|(i, _)| info.zeros_on(axis).binary_search(i).is_err())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The axes a tensor sums to one along (a softmax output).
pub fn softmax_axes(op: &dyn TypedOp) -> TVec<usize> {
    match op.downcast_ref::<Softmax>() {
        Some(s) if s.kind == SoftmaxKind::Softmax && s.axes.len() == 1 => s.axes.clone(),
        _ => tvec!(),
    }
}

/// Known slices of an op node's output, from its operands'.
pub fn propagate(
    egraph: &SlimGraph,
    node: &TensorLang,
    op: &dyn TypedOp,
    out: &TypedFact,
) -> KnownSlices {
    let rank = out.rank();
    let known = match node {
        TensorLang::Map([_, x]) => through_map(egraph, *x, op, rank),
        TensorLang::Bin([_, x, y]) => through_bin(egraph, *x, *y, op, out),
        TensorLang::Axis([_, x]) => op
            .downcast_ref::<AxisOp>()
            .and_then(|axis_op| through_axis_op(egraph, *x, axis_op, rank)),
        TensorLang::EinSum([_, x, y]) => op
            .downcast_ref::<EinSum>()
            .and_then(|einsum| through_softmax_average(egraph, [*x, *y], einsum, out)),
        TensorLang::Conv([_, x, k, b]) => {
            ops::plain_conv(op).and_then(|conv| constant_filters(egraph, [*x, *k, *b], conv, out))
        }
        _ => None,
    };
    known.unwrap_or_else(|| vec![vec![]; rank])
}

/// A convolution's output channel whose filter is zero holds its bias at every position, when
/// the data is finite (a zero filter against NaN is NaN): what Network Slimming's γ = 0 leaves
/// once BatchNorm is folded in.
fn constant_filters(
    egraph: &SlimGraph,
    [x, k, b]: [Id; 3],
    conv: &Conv,
    out: &TypedFact,
) -> Option<KnownSlices> {
    if !egraph[x].data.finite {
        return None;
    }
    let bias = const_of(egraph, b)?;
    let bias = egraph.analysis.tables.consts.tensor(bias).ok()?;
    let bias = bias.cast_to::<f32>().ok()?.into_owned();
    let bias = bias.to_plain_array_view::<f32>().ok()?;
    let mut known = vec![vec![]; out.rank()];
    let value = |v: f32| {
        let t = tensor0(v).broadcast_into_rank(out.rank()).ok()?;
        Some(Arc::new(t.cast_to_dt(out.datum_type).ok()?.into_owned()))
    };
    known[ops::conv_channel_axis(conv)] = egraph[k]
        .data
        .zeros_on(0)
        .iter()
        .filter_map(|&o| {
            let v = if bias.ndim() == 0 {
                bias.iter().next()?
            } else {
                bias.get(o)?
            };
            Some((o, value(*v)?))
        })
        .collect();
    Some(known)
}

fn small(v: &Tensor) -> bool {
    v.len() <= VALUE_LIMIT
}

fn eval(op: &dyn TypedOp, inputs: &[&Arc<Tensor>]) -> Option<Arc<Tensor>> {
    let inputs: TVec<TValue> = inputs.iter().map(|t| (**t).clone().into_tvalue()).collect();
    let mut out = op.eval_out_of_plan(inputs).ok()??;
    let value = out.remove(0).into_tensor();
    small(&value).then(|| Arc::new(value))
}

fn through_map(egraph: &SlimGraph, x: Id, op: &dyn TypedOp, rank: usize) -> Option<KnownSlices> {
    let slices_of_axis = |axis: usize| -> Vec<(usize, Arc<Tensor>)> {
        let Some(indices) = known_indices(egraph, x, axis) else {
            return vec![];
        };
        indices
            .into_iter()
            .filter_map(|i| Some((i, eval(op, &[&slice_value(egraph, x, axis, i)?])?)))
            .collect()
    };
    Some((0..rank).map(slices_of_axis).collect())
}

fn through_bin(
    egraph: &SlimGraph,
    x: Id,
    y: Id,
    op: &dyn TypedOp,
    out: &TypedFact,
) -> Option<KnownSlices> {
    let slices_of_axis = |axis: usize| -> Vec<(usize, Arc<Tensor>)> {
        let Ok(n) = out.shape[axis].to_usize() else {
            return vec![];
        };
        if n <= 1 || n > VALUE_LIMIT {
            return vec![];
        }
        let indices: Vec<usize> = match (
            known_indices(egraph, x, axis),
            known_indices(egraph, y, axis),
        ) {
            (None, None) => return vec![], // constant on both sides: tract folds it
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a
                .into_iter()
                .filter(|i| b.binary_search(i).is_ok())
                .collect(),
        };
        let operand_slice = |id: Id, i: usize| {
            let broadcast = egraph[id].data.dim(axis) == Some(1);
            slice_value(egraph, id, axis, if broadcast { 0 } else { i })
        };
        indices
            .into_iter()
            .filter_map(|i| {
                Some((
                    i,
                    eval(op, &[&operand_slice(x, i)?, &operand_slice(y, i)?])?,
                ))
            })
            .collect()
    };
    Some((0..out.rank()).map(slices_of_axis).collect())
}

/// Axis moves, insertions and removals carry known slices along; a reshape splitting an axis into
/// groups makes a group known when all its slices are.
fn through_axis_op(egraph: &SlimGraph, x: Id, op: &AxisOp, rank: usize) -> Option<KnownSlices> {
    let info = &egraph[x].data;
    let mut known: KnownSlices = vec![vec![]; rank];
    if let AxisOp::Reshape(at, from, to) = op {
        if let Some(groups) = split_groups(egraph, x, *at, from, to) {
            known[*at] = groups;
        }
    }
    for (axis, slices) in info.known.iter().enumerate() {
        let Some(to_axis) = op.transform_axis(axis) else {
            continue;
        };
        known[to_axis] = slices
            .iter()
            .filter_map(|(i, v)| {
                let mut value = (**v).clone();
                reshape_value(op, &mut value)?;
                Some((*i, Arc::new(value)))
            })
            .collect();
    }
    Some(known)
}

/// Applies an axis op to a slice value (whose broadcast axes have size 1).
fn reshape_value(op: &AxisOp, value: &mut Tensor) -> Option<()> {
    match op {
        AxisOp::Reshape(at, from, to) => {
            let dims = &value.shape()[*at..*at + from.len()];
            let new: Vec<usize> = if dims.iter().all(|d| *d == 1) {
                vec![1; to.len()]
            } else if dims
                .iter()
                .zip(from)
                .all(|(d, f)| f.to_usize().ok() == Some(*d))
            {
                to.iter()
                    .map(|t| t.to_usize().ok())
                    .collect::<Option<_>>()?
            } else {
                return None;
            };
            let mut shape = value.shape().to_vec();
            shape.splice(*at..*at + from.len(), new);
            value.set_shape(&shape).ok()
        }
        _ => op.change_tensor(value, false).ok(),
    }
}

/// For a reshape splitting axis `at` into groups × rest: the groups whose every slice is known,
/// with their values (the slices' values side by side, reshaped).
fn split_groups(
    egraph: &SlimGraph,
    x: Id,
    at: usize,
    from: &[TDim],
    to: &[TDim],
) -> Option<Vec<(usize, Arc<Tensor>)>> {
    if from.len() != 1 || to.len() < 2 {
        return None;
    }
    let rest: Vec<usize> = to[1..]
        .iter()
        .map(|d| d.to_usize().ok())
        .collect::<Option<_>>()?;
    let size: usize = rest.iter().product();
    let groups = to[0].to_usize().ok()?;
    let known = known_indices(egraph, x, at)?;
    let mut found = vec![];
    for g in 0..groups {
        let members: Vec<usize> = (g * size..(g + 1) * size).collect();
        if !members.iter().all(|m| known.binary_search(m).is_ok()) {
            continue;
        }
        let values: Option<Vec<Arc<Tensor>>> = members
            .iter()
            .map(|m| slice_value(egraph, x, at, *m))
            .collect();
        let Some(stacked) = values.and_then(|v| stack(&v, at)) else {
            continue;
        };
        let mut shape = stacked.shape().to_vec();
        shape.splice(at..at + 1, std::iter::once(1).chain(rest.iter().copied()));
        if let Ok(value) = stacked.into_shape(&shape) {
            found.push((g, Arc::new(value)));
        }
    }
    Some(found)
}

/// Slice values put side by side along `axis`, after broadcasting them to a common shape.
pub fn stack(values: &[Arc<Tensor>], axis: usize) -> Option<Tensor> {
    let rank = values.first()?.rank();
    let mut common: Vec<usize> = (0..rank)
        .map(|a| values.iter().map(|v| v.shape()[a]).max().unwrap_or(1))
        .collect();
    common[axis] = 1;
    let broadcast: Vec<Tensor> = values
        .iter()
        .map(|v| v.broadcast_to_shape(&common))
        .collect::<TractResult<_>>()
        .ok()?;
    Tensor::stack_tensors(axis, &broadcast).ok()
}

/// An EinSum averaging one operand along an axis with weights summing to one (softmax · V): the
/// known slices of the averaged operand that do not vary along that axis come out unchanged.
fn through_softmax_average(
    egraph: &SlimGraph,
    operands: [Id; 2],
    einsum: &EinSum,
    out: &TypedFact,
) -> Option<KnownSlices> {
    // Letters summed over, ignoring size-1 axes that are merely dropped.
    let size_of = |l: &Axis| -> Option<TDim> {
        let slot = (0..2).find(|s| !l.inputs[*s].is_empty())?;
        let fact = egraph[operands[slot]].data.fact.as_ref()?;
        Some(fact.shape[l.inputs[slot][0]].clone())
    };
    let contracted: Vec<_> = einsum
        .axes
        .iter_all_axes()
        .filter(|l| l.outputs[0].is_empty() && size_of(l) != Some(TDim::Val(1)))
        .collect();
    let [letter] = contracted.as_slice() else {
        return None;
    };
    let mut known: KnownSlices = vec![vec![]; out.rank()];
    for (slot, other) in [(0, 1), (1, 0)] {
        let (&[averaged_axis], &[weights_axis]) = (
            letter.inputs[slot].as_slice(),
            letter.inputs[other].as_slice(),
        ) else {
            continue;
        };
        if !egraph[operands[other]]
            .data
            .sums_to_one
            .contains(&weights_axis)
        {
            continue;
        }
        let weights = egraph[operands[other]].data.fact.as_ref()?;
        if weights.datum_type != f32::datum_type() {
            continue;
        }
        let ones = Arc::new(tensor0(1f32).broadcast_into_rank(weights.rank()).ok()?);
        for (axis, slots) in known.iter_mut().enumerate() {
            let Ok(l) = einsum.axes.axis((InOut::Out(0), axis)) else {
                continue;
            };
            let &[operand_axis] = l.inputs[slot].as_slice() else {
                continue;
            };
            for (i, v) in nonzero_known(egraph, operands[slot], operand_axis) {
                if v.shape()[averaged_axis] != 1 {
                    continue;
                }
                let inputs = if slot == 0 { [&v, &ones] } else { [&ones, &v] };
                if let Some(value) = eval(einsum, &inputs) {
                    slots.push((i, value));
                }
            }
        }
    }
    Some(known)
}

/// Known slices of `(keep axis set x)` from those of `x`.
pub fn through_keep(known: &KnownSlices, axis: usize, set: &[usize]) -> KnownSlices {
    known
        .iter()
        .enumerate()
        .map(|(b, slices)| {
            if b == axis {
                return set
                    .iter()
                    .enumerate()
                    .filter_map(|(p, i)| lookup(known, axis, *i).map(|v| (p, v.clone())))
                    .collect();
            }
            slices
                .iter()
                .filter_map(|(i, v)| {
                    if v.shape()[axis] == 1 {
                        return Some((*i, v.clone()));
                    }
                    select_slices(v, axis, set).ok().map(|s| (*i, Arc::new(s)))
                })
                .collect()
        })
        .collect()
}

/// Merges `from` into `to`; true if `to` gained slices.
pub fn merge(to: &mut KnownSlices, from: &KnownSlices) -> bool {
    if to.len() < from.len() {
        to.resize(from.len(), vec![]);
    }
    let mut changed = false;
    for (axis, slices) in from.iter().enumerate() {
        for (i, v) in slices {
            if let Err(at) = to[axis].binary_search_by_key(i, |(j, _)| *j) {
                to[axis].insert(at, (*i, v.clone()));
                changed = true;
            }
        }
    }
    changed
}
