//! What the weights and calibration data say about the units of a group: which are zero in the
//! consumer, their norms, their mean activations and contributions, and what removing some
//! adds on average to the consumer's output (bias compensation, and the constants folded when
//! writing ONNX).

use crate::model::discover::{Group, Kind, Units};
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

/// What calibration data says about one group.
#[derive(Clone, Debug)]
pub struct GroupStats {
    /// Activation-aware score of each unit.
    pub scores: Vec<f32>,
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

/// Axes of the activation the consumer carries to its output (tokens, batch), and axes of the
/// output the weight carries (features).
fn token_and_feature_axes(einsum: &EinSum, weight_slot: usize) -> (Vec<usize>, Vec<usize>) {
    let input_slot = 1 - weight_slot;
    let mut tokens = vec![];
    let mut features = vec![];
    for letter in einsum.axes.iter_all_axes() {
        let Some(&out) = letter.outputs[0].first() else {
            continue;
        };
        if let Some(&a) = letter.inputs[input_slot].first() {
            tokens.push(a);
        } else if !letter.inputs[weight_slot].is_empty() {
            features.push(out);
        }
    }
    (tokens, features)
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

/// Mean L2 norm over tokens of a contribution: features are the `features` axes of `out`.
fn mean_token_norm(out: &Tensor, features: &[usize]) -> TractResult<f32> {
    let data = out.cast_to::<f32>()?;
    let view = data.to_plain_array_view::<f32>()?;
    let mut squares = view.mapv(|v| v * v);
    let mut sorted = features.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    for &axis in &sorted {
        squares = squares.sum_axis(tract_ndarray::Axis(axis));
    }
    let norms = squares.mapv(f32::sqrt);
    Ok(norms.mean().unwrap_or(0.0))
}

/// Activation statistics of every group on captured activations (one tensor per sample).
pub fn activation_stats(
    model: &TypedModel,
    group: &Group,
    activations: &[Tensor],
) -> TractResult<GroupStats> {
    let (einsum, weight_slot) = consumer_einsum(model, group)?;
    let (tokens, features) = token_and_feature_axes(&einsum, weight_slot);
    let weight = weight_of(model, group.weight)?;
    let units = group.activation_units;
    let mut mean_sum: Option<tract_ndarray::ArrayD<f32>> = None;
    let mut scores = vec![0f32; group.units];
    for activation in activations {
        let mean = mean_over(activation, &tokens)?;
        mean_sum = Some(match mean_sum {
            Some(sum) => sum + mean,
            None => mean,
        });
        match group.kind {
            Kind::Ffn => {
                // Mean |activation| per channel: average over tokens, then over the unit's slices.
                let magnitude = activation
                    .cast_to::<f32>()?
                    .to_plain_array_view::<f32>()?
                    .mapv(f32::abs);
                let magnitude = mean_over(&magnitude.into_tensor(), &tokens)?;
                for (u, score) in scores.iter_mut().enumerate() {
                    let slices = units.slices(&[u]);
                    let total: f32 = slices
                        .iter()
                        .map(|&i| {
                            magnitude
                                .index_axis(tract_ndarray::Axis(units.axis), i)
                                .mean()
                                .unwrap_or(0.0)
                        })
                        .sum();
                    *score += total / slices.len() as f32;
                }
            }
            Kind::Heads => {
                for (u, score) in scores.iter_mut().enumerate() {
                    let part = units.select(activation, &[u])?;
                    let w = group.weight_units.select(&weight, &[u])?;
                    *score +=
                        mean_token_norm(&contract(&einsum, weight_slot, part, w)?, &features)?;
                }
            }
        }
    }
    let samples = activations.len().max(1) as f32;
    scores.iter_mut().for_each(|s| *s /= samples);
    if group.kind == Kind::Ffn {
        let norms = unit_norms(&weight, group.weight_units, group.units)?;
        scores.iter_mut().zip(norms).for_each(|(s, n)| *s *= n);
    }
    let mean = mean_sum
        .context("no calibration samples")?
        .mapv(|v| v / samples);
    Ok(GroupStats {
        scores,
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
