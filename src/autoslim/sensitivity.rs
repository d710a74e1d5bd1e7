//! A global budget weighed by the model's outputs: how far they move when one group alone is
//! cut to a level and repaired, measured on calibration samples.
//!
//! A layer's own reconstruction error does not say how much the model's output depends on the
//! layer (an early layer's error passes through every later one), so [`GlobalCost::Outputs`]
//! and [`GlobalCost::Embeddings`] measure it: for each group, at the allowed levels of its
//! removal order nearest ½, 1 and 2 times its kind's target, the model with that group alone
//! cut and repaired runs on the first [`PROBE_SAMPLES`] calibration samples, and its loss
//! against the dense outputs is taken. Between measured levels the loss is interpolated
//! linearly (from 0 at level 0, never decreasing), and its increments become the order's step
//! costs, which the global budget then spends as it spends reconstruction costs.

use crate::autoslim::calibrated::Calibrated;
use crate::autoslim::calibration::Calibration;
use crate::autoslim::choice::{units_of, Choice};
use crate::autoslim::prune::{repair_group, write_repairs, Plan, PlanGroup, Repair, Targets};
use crate::model::discover::Group;
use crate::model::verify::{
    fidelity_to_outputs, names_logits, output_names, pools, OutputFidelity,
};
use tract_core::internal::*;

/// Calibration samples each measurement runs on (the first ones).
pub const PROBE_SAMPLES: usize = 16;

/// Multiples of a kind's target at which each group is measured.
const PROBE_LEVELS: [f64; 3] = [0.5, 1.0, 2.0];

/// What a global budget weighs each removal by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GlobalCost {
    /// The layer's own error: the greedy least-squares removal cost relative to the
    /// consumer's dense output energy (or the score relative to the layer's mean).
    #[default]
    Reconstruction,
    /// The measured change of the model's outputs, token by token: the squared relative L2
    /// error of every output, with the group alone cut to a level and repaired. One run of
    /// the model on [`PROBE_SAMPLES`] samples per group and level.
    Outputs,
    /// As `Outputs`, for sentence-embedding models: 1 − the cosine between the mean-pooled
    /// real tokens of the dense and the cut model (outputs `[1, tokens, features]`, with an
    /// attention-mask input).
    Embeddings,
}

/// The samples measurements run on and the dense model's outputs on them.
pub struct Probe<'a> {
    model: &'a TypedModel,
    samples: &'a [TVec<TValue>],
    mask: Option<usize>,
    dense: Vec<TVec<TValue>>,
    names: Vec<String>,
    repair: Repair,
    cost: GlobalCost,
}

impl<'a> Probe<'a> {
    /// Runs the dense model on the first [`PROBE_SAMPLES`] samples of `calibration`; an error
    /// when `cost` is [`GlobalCost::Embeddings`] and no output pools into an embedding.
    pub fn new(
        model: &'a TypedModel,
        calibration: &'a Calibration,
        repair: Repair,
        cost: GlobalCost,
    ) -> TractResult<Probe<'a>> {
        let samples = &calibration.samples[..calibration.samples.len().min(PROBE_SAMPLES)];
        let plan = model.clone().into_optimized()?.into_runnable()?;
        let dense = samples
            .iter()
            .map(|s| plan.run(s.clone()))
            .collect::<TractResult<Vec<_>>>()?;
        let names = output_names(model)?;
        if cost == GlobalCost::Embeddings {
            let pooling = calibration.mask.zip(samples.first().zip(dense.first()));
            let found = pooling.is_some_and(|(m, (sample, outputs))| {
                let embedding =
                    |(o, name): (&TValue, &String)| pools(o, &sample[m]) && !names_logits(name);
                outputs.iter().zip(&names).any(embedding)
            });
            ensure!(
                found,
                "weighing by embeddings needs an output of shape [1, tokens, features] that is not a language model's logits, and an attention-mask input (an input named *mask*) to pool it with"
            );
        }
        Ok(Probe {
            model,
            samples,
            mask: calibration.mask,
            dense,
            names,
            repair,
            cost,
        })
    }

    /// The loss with `entry` cut from `group` and its consumer repaired.
    fn loss(&self, group: &Group, entry: &PlanGroup, stats: &Calibrated) -> TractResult<f64> {
        let repaired = repair_group(self.model, group, entry, Some(stats), self.repair)?;
        let plan = Plan {
            groups: vec![entry.clone()],
        };
        let cut = write_repairs(
            self.model,
            std::slice::from_ref(group),
            &plan,
            vec![Some(repaired)],
        )?;
        let fidelity = fidelity_to_outputs(
            &self.names,
            &self.dense,
            &cut.model,
            self.samples,
            self.mask,
        )?;
        Ok(self.loss_of(&fidelity))
    }

    fn loss_of(&self, fidelity: &[OutputFidelity]) -> f64 {
        let per_output = |f: &OutputFidelity| match self.cost {
            GlobalCost::Embeddings => f.pooled_cosine.map_or(0.0, |c| 1.0 - c),
            _ => f.relative_l2.powi(2),
        };
        fidelity.iter().map(per_output).sum()
    }

    /// Replaces the step costs of `choice` by the measured loss increments of `group`.
    pub fn measure(
        &self,
        group: &Group,
        choice: &mut Choice,
        stats: &Calibrated,
        targets: &Targets,
    ) -> TractResult<()> {
        let mut measured = vec![(0, 0.0)];
        for level in probe_levels(group, choice, targets) {
            let entry = PlanGroup {
                kind: group.kind,
                layer: group.layer,
                name: group.name.clone(),
                units: group.units,
                removed: units_of(&choice.candidates, &choice.order[..level]),
                ridge: choice.ridge,
            };
            let loss = self
                .loss(group, &entry, stats)
                .with_context(|| format!("measuring `{}` at {level} removed", group.name))?;
            measured.push((level, loss));
        }
        let curve = interpolated(&measured, choice.order.len());
        for (k, step) in choice.order.iter_mut().enumerate() {
            step.cost = curve[k + 1] - curve[k];
        }
        Ok(())
    }
}

/// The allowed levels of `choice` (within its order) nearest [`PROBE_LEVELS`] times its
/// kind's target, ascending, without 0 and repeats.
fn probe_levels(group: &Group, choice: &Choice, targets: &Targets) -> Vec<usize> {
    let target = targets.of(group.kind) * group.units as f64;
    let size = choice.candidates.size();
    let mut levels: Vec<usize> = PROBE_LEVELS
        .iter()
        .map(|f| {
            choice
                .levels
                .nearest(f * target, size)
                .min(choice.order.len())
        })
        .filter(|&l| l > 0)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// The loss at every level `0..=depth`: linear between the measured `(level, loss)` points
/// (which start at `(0, 0)`), flat after the last, and never decreasing (a measured dip is
/// noise: removing more does not help the model).
fn interpolated(measured: &[(usize, f64)], depth: usize) -> Vec<f64> {
    let mut curve = Vec::with_capacity(depth + 1);
    let mut highest = 0.0f64;
    for level in 0..=depth {
        let value = match measured.iter().position(|(l, _)| *l >= level) {
            Some(0) => measured[0].1,
            Some(i) => {
                let ((l0, v0), (l1, v1)) = (measured[i - 1], measured[i]);
                v0 + (v1 - v0) * (level - l0) as f64 / (l1 - l0) as f64
            }
            None => measured.last().map_or(0.0, |(_, v)| *v),
        };
        highest = highest.max(value);
        curve.push(highest);
    }
    curve
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_linear_between_measurements_and_never_falls() {
        let curve = interpolated(&[(0, 0.0), (2, 1.0), (4, 0.5), (6, 3.0)], 7);
        assert_eq!(curve, vec![0.0, 0.5, 1.0, 1.0, 1.0, 1.75, 3.0, 3.0]);
    }
}
