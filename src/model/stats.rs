//! What the weights say about the units of a group (which are zero in the consumer, their
//! norms), and the mean contribution of some units to the consumer's output on a few runs (the
//! constant units folded into a bias when writing ONNX). Calibration statistics for auto-slim
//! are in `autoslim::calibrated`.

use crate::model::discover::{Group, Units};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;

/// The tensor of a constant node (a weight).
pub fn weight_of(model: &TypedModel, node: usize) -> TractResult<Arc<Tensor>> {
    Ok(model
        .node(node)
        .op_as::<Const>()
        .context("weight is not a constant")?
        .val()
        .clone())
}

/// L2 norm of each unit's slices of a tensor.
pub(crate) fn unit_norms(tensor: &Tensor, units: Units, count: usize) -> TractResult<Vec<f32>> {
    let data = units.view(tensor)?;
    let data = data.cast_to::<f32>()?;
    let view = data.to_plain_array_view::<f32>()?;
    Ok((0..count)
        .map(|u| {
            units
                .slices(&[u])
                .iter()
                .map(|&i| {
                    view.index_axis(tract_ndarray::Axis(units.axis), i)
                        .iter()
                        .map(|v| v * v)
                        .sum::<f32>()
                })
                .sum::<f32>()
                .sqrt()
        })
        .collect())
}

/// Units already all zero in the consumer's weight (already pruned: slimming removes them).
pub fn zero_units(model: &TypedModel, group: &Group) -> TractResult<Vec<usize>> {
    let norms = unit_norms(
        &*weight_of(model, group.weight)?,
        group.weight_units,
        group.units,
    )?;
    Ok((0..group.units).filter(|&u| norms[u] == 0.0).collect())
}

/// The mean input of a group's consumer on some runs (for constant units: their value).
#[derive(Clone, Debug)]
pub struct GroupStats {
    /// The consumer's input averaged over tokens and samples (token axes kept, size 1).
    pub mean: Tensor,
}

/// The consumer of a group, as an EinSum, with the slot of its weight.
fn consumer_einsum(model: &TypedModel, group: &Group) -> TractResult<(EinSum, usize)> {
    let node = model.node(group.consumer);
    let einsum = node
        .op_as::<EinSum>()
        .context("consumer is not an EinSum")?
        .clone();
    let slot = node
        .inputs
        .iter()
        .position(|i| i.node == group.weight)
        .context("consumer does not read its weight")?;
    Ok((einsum, slot))
}

/// Evaluates the consumer on an activation and a weight (in the consumer's operand order).
fn contract(
    einsum: &EinSum,
    weight_slot: usize,
    activation: Tensor,
    weight: Tensor,
) -> TractResult<Tensor> {
    let mut inputs = [activation.into_tvalue(), weight.into_tvalue()];
    if weight_slot == 0 {
        inputs.reverse();
    }
    let mut out = einsum
        .eval_out_of_plan(inputs.into_iter().collect())?
        .context("no plain evaluation")?;
    Ok(out.remove(0).into_tensor())
}

/// Axes of the activation the consumer carries to its output (tokens, batch).
fn token_axes(einsum: &EinSum, weight_slot: usize) -> Vec<usize> {
    let input_slot = 1 - weight_slot;
    einsum
        .axes
        .iter_all_axes()
        .filter(|letter| !letter.outputs[0].is_empty())
        .filter_map(|letter| letter.inputs[input_slot].first().copied())
        .collect()
}

/// Mean over the given axes (kept, size 1) of a tensor, as f32.
fn mean_over(tensor: &Tensor, axes: &[usize]) -> TractResult<tract_ndarray::ArrayD<f32>> {
    let data = tensor.cast_to::<f32>()?;
    let mut view = data.to_plain_array_view::<f32>()?.to_owned();
    for &axis in axes {
        let mean = view
            .mean_axis(tract_ndarray::Axis(axis))
            .context("mean of an empty axis")?;
        view = mean.insert_axis(tract_ndarray::Axis(axis));
    }
    Ok(view)
}

/// The consumer's mean input over the captured activations (one tensor per run).
pub fn activation_stats(
    model: &TypedModel,
    group: &Group,
    activations: &[Tensor],
) -> TractResult<GroupStats> {
    let (einsum, weight_slot) = consumer_einsum(model, group)?;
    let tokens = token_axes(&einsum, weight_slot);
    let mut sum: Option<tract_ndarray::ArrayD<f32>> = None;
    for activation in activations {
        let mean = mean_over(activation, &tokens)?;
        sum = Some(match sum {
            Some(sum) => sum + mean,
            None => mean,
        });
    }
    let runs = activations.len().max(1) as f32;
    let mean = sum.context("no runs")?.mapv(|v| v / runs);
    Ok(GroupStats {
        mean: mean.into_tensor(),
    })
}

/// The mean contribution of a group's removed units to its consumer's output.
pub fn compensation(
    model: &TypedModel,
    group: &Group,
    stats: &GroupStats,
    removed: &[usize],
) -> TractResult<Tensor> {
    let (einsum, weight_slot) = consumer_einsum(model, group)?;
    let mean = group.activation_units.select(&stats.mean, removed)?;
    let weight = weight_of(model, group.weight)?;
    let w = group.weight_units.select(&weight, removed)?;
    contract(&einsum, weight_slot, mean, w)
}

/// Runs `model` on every sample and returns, per requested outlet, its value on each sample.
pub fn capture(
    model: &TypedModel,
    outlets: &[OutletId],
    samples: &[TVec<TValue>],
) -> TractResult<Vec<Vec<Tensor>>> {
    let mut probe = model.clone();
    probe.select_output_outlets(outlets)?;
    let plan = probe.into_optimized()?.into_runnable()?;
    let mut captured: Vec<Vec<Tensor>> = vec![vec![]; outlets.len()];
    for sample in samples {
        let values = plan.run(sample.clone())?;
        for (slot, value) in values.into_iter().enumerate() {
            captured[slot].push(value.into_tensor());
        }
    }
    Ok(captured)
}
