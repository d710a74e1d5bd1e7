//! Auto-slim: scores the units of every discovered group, chooses which to remove for target
//! sparsities (a [`Plan`]), and writes the plan into the model as zeros in the consumers'
//! weights — the slimming pass then cuts the units out everywhere.
//!
//! Scores without data are magnitudes: a unit's slice norm in the consumer's weight times its
//! slice norms in the producers' weights (an FFN channel's producer columns and consumer row; a
//! head's V columns and output-projection rows). With calibration data they are activation-aware:
//! an FFN channel's mean |activation| times its consumer-row norm; a head's mean norm of its
//! contribution to the output projection. Calibration data also gives *bias compensation*: the
//! mean contribution of the removed units is added to the consumer's bias, so the pruned model
//! is right on average (as FLAP does).

use crate::model::discover::{Group, Kind, Units};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_core::ops::math::add;

/// Which units to remove from each group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per group the plan touches.
    pub groups: Vec<PlanGroup>,
}

/// The removed units of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanGroup {
    /// FFN channels or heads.
    pub kind: Kind,
    /// Position among the model's groups of this kind.
    pub layer: usize,
    /// The consumer's node name, checked against the model when a plan is applied.
    pub name: String,
    /// The group's units, checked against the model.
    pub units: usize,
    /// The units to remove.
    pub removed: Vec<usize>,
}

/// How much to remove.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// Fraction of FFN channels to remove.
    pub ffn: f64,
    /// Fraction of heads to remove.
    pub heads: f64,
    /// Rank units across layers (scores normalised per layer) instead of per layer.
    pub global: bool,
    /// With `global`: the fraction of each layer's units that stays at least.
    pub floor: f64,
    /// Round kept FFN widths to a multiple of this.
    pub multiple_of: usize,
}

impl Targets {
    /// The same fraction removed in every layer, kept widths not rounded.
    pub fn per_layer(ffn: f64, heads: f64) -> Targets {
        Targets {
            ffn,
            heads,
            global: false,
            floor: 0.1,
            multiple_of: 1,
        }
    }
}

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
fn unit_norms(tensor: &Tensor, units: Units, count: usize) -> TractResult<Vec<f32>> {
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

/// Magnitude scores of a group's units: consumer slice norm times producer slice norms.
pub fn magnitude_scores(model: &TypedModel, group: &Group) -> TractResult<Vec<f32>> {
    let mut scores = unit_norms(
        &*weight_of(model, group.weight)?,
        group.weight_units,
        group.units,
    )?;
    // Producers compute KV heads, each shared by `units / kv_heads` query heads.
    let shared = (group.units / group.kv_heads.max(1)).max(1);
    for (weight, units) in &group.producers {
        let norms = unit_norms(&*weight_of(model, *weight)?, *units, group.units / shared)?;
        scores
            .iter_mut()
            .enumerate()
            .for_each(|(u, s)| *s *= norms[u / shared]);
    }
    Ok(scores)
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

/// Rounds a kept width to a multiple of `m`, staying within `[min(m, n), n]`.
fn round_kept(kept: usize, n: usize, m: usize) -> usize {
    if m <= 1 {
        return kept;
    }
    let rounded = (kept + m / 2) / m * m;
    rounded.clamp(m.min(n), n)
}

/// The `count` lowest-scored units (ties broken by index), sorted.
fn lowest(scores: &[f32], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order.into_iter().take(count).collect();
    chosen.sort_unstable();
    chosen
}

fn target_of(targets: &Targets, kind: Kind) -> f64 {
    match kind {
        Kind::Ffn => targets.ffn,
        Kind::Heads => targets.heads,
    }
}

/// How many units of each group to remove.
fn removal_counts(groups: &[Group], scores: &[Vec<f32>], targets: &Targets) -> Vec<usize> {
    let mut counts: Vec<usize> = groups
        .iter()
        .map(|g| (target_of(targets, g.kind) * g.units as f64).round() as usize)
        .collect();
    if targets.global {
        for kind in [Kind::Ffn, Kind::Heads] {
            global_counts(groups, scores, targets, kind, &mut counts);
        }
    }
    for (g, count) in groups.iter().zip(counts.iter_mut()) {
        if g.kind == Kind::Ffn {
            *count = g.units
                - round_kept(
                    g.units - (*count).min(g.units),
                    g.units,
                    targets.multiple_of,
                );
        }
    }
    counts
}

/// Global ranking of one kind: the lowest normalised scores across groups go, each group keeping
/// at least its floor.
fn global_counts(
    groups: &[Group],
    scores: &[Vec<f32>],
    targets: &Targets,
    kind: Kind,
    counts: &mut [usize],
) {
    let members: Vec<usize> = (0..groups.len())
        .filter(|&i| groups[i].kind == kind)
        .collect();
    let total: usize = members.iter().map(|&i| groups[i].units).sum();
    let wanted = (target_of(targets, kind) * total as f64).round() as usize;
    let mut ranked: Vec<(f32, usize, usize)> = vec![];
    for &i in &members {
        let mean = scores[i].iter().sum::<f32>() / scores[i].len().max(1) as f32;
        let scale = if mean > 0.0 { mean } else { 1.0 };
        ranked.extend(scores[i].iter().enumerate().map(|(u, s)| (s / scale, i, u)));
        counts[i] = 0;
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut taken = 0;
    for (_, i, _) in ranked {
        if taken == wanted {
            break;
        }
        let n = groups[i].units;
        let floor = ((targets.floor * n as f64).ceil() as usize).max(1).min(n);
        if counts[i] < n - floor {
            counts[i] += 1;
            taken += 1;
        }
    }
}

/// Chooses the units to remove: per group the lowest-scored ones, as many as the targets ask.
pub fn choose(groups: &[Group], scores: &[Vec<f32>], targets: &Targets) -> Plan {
    let counts = removal_counts(groups, scores, targets);
    Plan {
        groups: groups
            .iter()
            .zip(scores)
            .zip(counts)
            .map(|((g, s), count)| PlanGroup {
                kind: g.kind,
                layer: g.layer,
                name: g.name.clone(),
                units: g.units,
                removed: lowest(s, count),
            })
            .collect(),
    }
}

/// The discovered group a plan entry names; an error says what does not match.
pub fn group_for<'a>(groups: &'a [Group], entry: &PlanGroup) -> Result<&'a Group, String> {
    let kind = match entry.kind {
        Kind::Ffn => "ffn",
        Kind::Heads => "heads",
    };
    let group = groups
        .iter()
        .find(|g| g.kind == entry.kind && g.layer == entry.layer)
        .ok_or_else(|| format!("the model has no {kind} layer {}", entry.layer))?;
    if group.name != entry.name || group.units != entry.units {
        return Err(format!(
            "{kind} layer {} is `{}` with {} units in the model, not `{}` with {}",
            entry.layer, group.name, group.units, entry.name, entry.units
        ));
    }
    let mut seen = HashSet::new();
    if let Some(bad) = entry
        .removed
        .iter()
        .find(|&&u| u >= group.units || !seen.insert(u))
    {
        return Err(format!(
            "{kind} layer {}: unit {bad} is out of range 0..{} or listed twice",
            entry.layer, group.units
        ));
    }
    Ok(group)
}

/// Puts `tensor` where `consumer`'s input `slot` reads a constant: in place when nothing else
/// reads that constant, else as a new constant for this consumer only.
fn replace_const(
    model: &mut TypedModel,
    consumer: usize,
    slot: usize,
    tensor: Tensor,
) -> TractResult<()> {
    let old = model.node(consumer).inputs[slot];
    let tensor = Arc::new(tensor);
    if model.outlet_successors(old).len() == 1 {
        let node = model.node_mut(old.node);
        node.op = Box::new(Const::new(tensor.clone())?);
        node.outputs[0].fact = TypedFact::try_from(tensor)?;
    } else {
        let name = format!("{}.pruned", model.node(old.node).name);
        let new = model.add_const(name, tensor)?;
        model.add_edge(new, InletId::new(consumer, slot))?;
    }
    Ok(())
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

/// Adds `delta` to the consumer's bias, or adds a bias where it has none.
fn add_to_bias(model: &mut TypedModel, group: &Group, delta: Tensor) -> TractResult<()> {
    if let Some((add_node, slot)) = group.bias {
        let bias = weight_of(model, model.node(add_node).inputs[slot].node)?;
        let delta = delta.into_shape(bias.shape())?;
        let sum = add()
            .eval_out_of_plan(tvec!(bias.into_tvalue(), delta.into_tvalue()))?
            .context("add")?;
        return replace_const(model, add_node, slot, sum[0].clone().into_tensor());
    }
    let output = OutletId::new(group.consumer, 0);
    let rank = model.outlet_fact(output)?.rank();
    let delta = delta.broadcast_into_rank(rank)?;
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, output)?;
    let name = format!("{}.compensation", group.name);
    let konst = patch.add_const(format!("{name}.bias"), delta)?;
    let sum = patch.wire_node(name, add(), &[tap, konst])?[0];
    patch.shunt_outside(model, output, sum)?;
    patch.apply(model)
}

/// A model with a plan written into it.
pub struct Pruned {
    /// The model with the plan written in.
    pub model: TypedModel,
    /// Per plan entry, what was added to the consumer's bias (with compensation).
    pub compensations: Vec<Option<Tensor>>,
}

/// Writes a plan into a copy of `model`: zeros in the consumers' weights for the removed units,
/// and with `stats` (one per group) their mean contribution added to the consumers' biases.
pub fn apply(
    model: &TypedModel,
    groups: &[Group],
    plan: &Plan,
    stats: Option<&[GroupStats]>,
) -> TractResult<Pruned> {
    let mut pruned = model.clone();
    let mut compensations = vec![];
    for entry in &plan.groups {
        if entry.removed.is_empty() {
            compensations.push(None);
            continue;
        }
        let index = groups
            .iter()
            .position(|g| g.kind == entry.kind && g.layer == entry.layer)
            .context("plan entry without a group")?;
        let group = &groups[index];
        let delta = stats
            .map(|stats| compensation(model, group, &stats[index], &entry.removed))
            .transpose()?;
        if let Some(delta) = &delta {
            add_to_bias(&mut pruned, group, delta.clone())?;
        }
        compensations.push(delta);
        let weight = weight_of(model, group.weight)?;
        let zeroed = group.weight_units.zeroed(&weight, &entry.removed)?;
        let slot = pruned
            .node(group.consumer)
            .inputs
            .iter()
            .position(|i| i.node == group.weight)
            .context("consumer does not read its weight")?;
        replace_const(&mut pruned, group.consumer, slot, zeroed)?;
    }
    Ok(Pruned {
        model: pruned,
        compensations,
    })
}
