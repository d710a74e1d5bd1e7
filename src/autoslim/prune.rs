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
use crate::autoslim::choice::KvLayout;
use crate::autoslim::refit::refit;
use crate::autoslim::sensitivity::GlobalCost;
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
    /// The relative ridge of the consumer's least-squares refit, when the choice
    /// cross-validated one (else the refit cross-validates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ridge: Option<f64>,
}

/// How much to remove.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// Fraction of FFN channels to remove.
    pub ffn: f64,
    /// Fraction of heads to remove.
    pub heads: f64,
    /// Spend each kind's fraction as one budget across layers, where removal costs least,
    /// instead of the same fraction in every layer.
    pub global: bool,
    /// With `global`: the fraction of each layer's units that stays at least.
    pub floor: f64,
    /// With `global`: what each removal is weighed by.
    pub global_cost: GlobalCost,
    /// Round kept FFN widths to a multiple of this.
    pub multiple_of: usize,
    /// Round kept query heads (per KV group with grouped-query attention) to a multiple of this.
    pub heads_multiple_of: usize,
    /// How grouped-query attention loses query heads.
    pub kv_layout: KvLayout,
}

impl Targets {
    /// The fraction of each layer's units a global budget keeps unless told otherwise.
    pub const DEFAULT_FLOOR: f64 = 0.1;

    /// The same fraction removed in every layer, kept widths not rounded, as many query heads
    /// from every KV group.
    pub fn per_layer(ffn: f64, heads: f64) -> Targets {
        Targets {
            ffn,
            heads,
            global: false,
            floor: Targets::DEFAULT_FLOOR,
            global_cost: GlobalCost::Reconstruction,
            multiple_of: 1,
            heads_multiple_of: 1,
            kv_layout: KvLayout::Equal,
        }
    }

    /// The fraction of `kind`'s units to remove.
    pub fn of(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Ffn => self.ffn,
            Kind::Heads => self.heads,
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

/// A consumer's new weight for one plan entry, what goes to its bias, and its refit's ridge.
pub struct Repaired {
    /// The consumer's weight: zeros on the removed units' rows, refit or not.
    pub weight: Tensor,
    /// What is added to the consumer's bias.
    pub bias_delta: Option<Tensor>,
    /// The relative ridge of a least-squares refit.
    pub ridge: Option<f64>,
}

/// The repaired consumer of `group` for its plan `entry`: zeros for the removed units, and with
/// `stats` the repair `repair` says.
pub fn repair_group(
    model: &TypedModel,
    group: &Group,
    entry: &PlanGroup,
    stats: Option<&Calibrated>,
    repair: Repair,
) -> TractResult<Repaired> {
    let weight = weight_of(model, group.weight)?;
    let zeroed = || group.weight_units.zeroed(&weight, &entry.removed);
    Ok(match stats {
        Some(stats) if repair == Repair::LeastSquares => {
            let w = stats.form.weight_matrix(&weight)?;
            let bias = bias_vector(model, group, stats.form.outputs)?;
            let fit = refit(stats, &w, Some(&bias), &entry.removed, entry.ridge)
                .with_context(|| format!("refitting `{}`", group.name))?;
            let delta = tract_ndarray::ArrayD::from_shape_vec(
                stats.form.bias_shape.clone(),
                fit.bias_delta,
            )?
            .into_tensor();
            Repaired {
                weight: stats
                    .form
                    .weight_tensor(fit.weight.view(), weight.datum_type())?,
                bias_delta: Some(delta),
                ridge: Some(fit.ridge),
            }
        }
        Some(stats) if repair == Repair::Compensation => {
            let w = stats.form.weight_matrix(&weight)?;
            Repaired {
                bias_delta: Some(stats.mean_contribution(&w, &entry.removed)?),
                weight: zeroed()?,
                ridge: None,
            }
        }
        _ => Repaired {
            weight: zeroed()?,
            bias_delta: None,
            ridge: None,
        },
    })
}

/// The index of the group a plan entry is for.
pub fn group_index(groups: &[Group], entry: &PlanGroup) -> TractResult<usize> {
    groups
        .iter()
        .position(|g| g.kind == entry.kind && g.layer == entry.layer)
        .context("plan entry without a group")
}

/// Every group's consumer for `plan` with zeros on the removed units and no repair (no
/// calibration data).
pub fn zeroed_consumers(
    model: &TypedModel,
    groups: &[Group],
    plan: &Plan,
) -> TractResult<Vec<Option<Repaired>>> {
    let mut repaired: Vec<Option<Repaired>> = (0..groups.len()).map(|_| None).collect();
    for entry in plan.groups.iter().filter(|e| !e.removed.is_empty()) {
        let index = group_index(groups, entry)?;
        repaired[index] = Some(repair_group(
            model,
            &groups[index],
            entry,
            None,
            Repair::None,
        )?);
    }
    Ok(repaired)
}

/// Writes repaired consumers (one per group, for the plan's entries that remove units) into a
/// copy of `model`.
pub fn write_repairs(
    model: &TypedModel,
    groups: &[Group],
    plan: &Plan,
    mut repaired: Vec<Option<Repaired>>,
) -> TractResult<Pruned> {
    let mut pruned = Pruned {
        model: model.clone(),
        compensations: vec![],
        ridges: vec![],
    };
    for entry in &plan.groups {
        let found = if entry.removed.is_empty() {
            None
        } else {
            let index = group_index(groups, entry)?;
            let repaired = repaired[index]
                .take()
                .with_context(|| format!("no repair for `{}`", entry.name))?;
            Some((&groups[index], repaired))
        };
        let Some((group, repaired)) = found else {
            pruned.compensations.push(None);
            pruned.ridges.push(None);
            continue;
        };
        let slot = pruned
            .model
            .node(group.consumer)
            .inputs
            .iter()
            .position(|i| i.node == group.weight)
            .context("consumer does not read its weight")?;
        if let Some(delta) = &repaired.bias_delta {
            add_to_bias(&mut pruned.model, group, delta.clone())?;
        }
        replace_const(&mut pruned.model, group.consumer, slot, repaired.weight)?;
        pruned.compensations.push(repaired.bias_delta);
        pruned.ridges.push(repaired.ridge);
    }
    Ok(pruned)
}
