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

use crate::autoslim::calibrated::Calibrated;
use crate::autoslim::refit::refit;
use crate::model::discover::{Group, Kind};
use crate::model::stats::{unit_norms, weight_of};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tract_core::internal::*;
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

/// How a plan entry does not match the model's groups.
#[derive(Debug, thiserror::Error)]
pub enum PlanMismatch {
    /// No group of that kind at that layer.
    #[error("the model has no {kind} layer {layer}")]
    NoLayer {
        /// The entry's kind.
        kind: Kind,
        /// The entry's layer.
        layer: usize,
    },
    /// The layer's group is another consumer or has another number of units.
    #[error("{kind} layer {layer} is `{name}` with {units} units in the model, not `{planned}` with {planned_units}")]
    OtherGroup {
        /// The entry's kind.
        kind: Kind,
        /// The entry's layer.
        layer: usize,
        /// The model's consumer there.
        name: String,
        /// Its units.
        units: usize,
        /// The consumer the entry names.
        planned: String,
        /// The units the entry states.
        planned_units: usize,
    },
    /// A removed unit that is out of range or listed twice.
    #[error("{kind} layer {layer}: unit {unit} is out of range 0..{units} or listed twice")]
    BadUnit {
        /// The entry's kind.
        kind: Kind,
        /// The entry's layer.
        layer: usize,
        /// The unit.
        unit: usize,
        /// The group's units.
        units: usize,
    },
}

/// The discovered group a plan entry names.
pub fn group_for<'a>(groups: &'a [Group], entry: &PlanGroup) -> Result<&'a Group, PlanMismatch> {
    let (kind, layer) = (entry.kind, entry.layer);
    let group = groups
        .iter()
        .find(|g| g.kind == kind && g.layer == layer)
        .ok_or(PlanMismatch::NoLayer { kind, layer })?;
    if group.name != entry.name || group.units != entry.units {
        return Err(PlanMismatch::OtherGroup {
            kind,
            layer,
            name: group.name.clone(),
            units: group.units,
            planned: entry.name.clone(),
            planned_units: entry.units,
        });
    }
    let mut seen = HashSet::new();
    if let Some(&unit) = entry
        .removed
        .iter()
        .find(|&&u| u >= group.units || !seen.insert(u))
    {
        return Err(PlanMismatch::BadUnit {
            kind,
            layer,
            unit,
            units: group.units,
        });
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

/// How the consumer of removed units is repaired, from calibration statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Repair {
    /// Only zeros: the removed units' contribution is lost.
    None,
    /// Their mean contribution over real calibration tokens is added to the consumer's bias.
    Compensation,
    /// The consumer's kept weights and bias are refit by ridge least squares to reproduce its
    /// dense output on the calibration tokens, with a cross-validated ridge.
    LeastSquares,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Repair::None => "none",
            Repair::Compensation => "bias compensation",
            Repair::LeastSquares => "least-squares refit",
        })
    }
}

/// A model with a plan written into it.
pub struct Pruned {
    /// The model with the plan written in.
    pub model: TypedModel,
    /// Per plan entry, what was added to the consumer's bias.
    pub compensations: Vec<Option<Tensor>>,
    /// Per plan entry, the relative ridge of a least-squares refit.
    pub ridges: Vec<Option<f64>>,
}

/// The consumer's bias as one value per output feature (zeros without a bias).
fn bias_vector(model: &TypedModel, group: &Group, outputs: usize) -> TractResult<Vec<f32>> {
    let Some((add_node, slot)) = group.bias else {
        return Ok(vec![0.0; outputs]);
    };
    let bias = weight_of(model, model.node(add_node).inputs[slot].node)?;
    let bias = bias.cast_to::<f32>()?;
    let values = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    match values.len() {
        n if n == outputs => Ok(values),
        1 => Ok(vec![values[0]; outputs]),
        n => bail!(
            "bias of `{}` has {n} values for {outputs} outputs",
            group.name
        ),
    }
}

/// Writes a plan into a copy of `model`: zeros in the consumers' weights for the removed units,
/// and with `stats` (one per group) the consumers repaired as `repair` says.
pub fn apply(
    model: &TypedModel,
    groups: &[Group],
    plan: &Plan,
    stats: Option<&[Calibrated]>,
    repair: Repair,
) -> TractResult<Pruned> {
    let mut pruned = Pruned {
        model: model.clone(),
        compensations: vec![],
        ridges: vec![],
    };
    for entry in &plan.groups {
        if entry.removed.is_empty() {
            pruned.compensations.push(None);
            pruned.ridges.push(None);
            continue;
        }
        let index = groups
            .iter()
            .position(|g| g.kind == entry.kind && g.layer == entry.layer)
            .context("plan entry without a group")?;
        let group = &groups[index];
        let weight = weight_of(model, group.weight)?;
        let slot = pruned
            .model
            .node(group.consumer)
            .inputs
            .iter()
            .position(|i| i.node == group.weight)
            .context("consumer does not read its weight")?;
        let (new_weight, delta, ridge) = match stats.map(|s| &s[index]) {
            Some(stats) if repair == Repair::LeastSquares => {
                let w = stats.form.weight_matrix(&weight)?;
                let bias = bias_vector(model, group, stats.form.outputs)?;
                let fit = refit(stats, &w, Some(&bias), &entry.removed)
                    .with_context(|| format!("refitting `{}`", group.name))?;
                let delta = tract_ndarray::ArrayD::from_shape_vec(
                    stats.form.bias_shape.clone(),
                    fit.bias_delta.clone(),
                )?
                .into_tensor();
                let new = stats
                    .form
                    .weight_tensor(fit.weight.view(), weight.datum_type())?;
                (new, Some(delta), Some(fit.ridge))
            }
            Some(stats) if repair == Repair::Compensation => {
                let w = stats.form.weight_matrix(&weight)?;
                let delta = stats.mean_contribution(&w, &entry.removed)?;
                let zeroed = group.weight_units.zeroed(&weight, &entry.removed)?;
                (zeroed, Some(delta), None)
            }
            _ => (
                group.weight_units.zeroed(&weight, &entry.removed)?,
                None,
                None,
            ),
        };
        if let Some(delta) = &delta {
            add_to_bias(&mut pruned.model, group, delta.clone())?;
        }
        replace_const(&mut pruned.model, group.consumer, slot, new_weight)?;
        pruned.compensations.push(delta);
        pruned.ridges.push(ridge);
    }
    Ok(pruned)
}
