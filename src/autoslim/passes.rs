//! The calibrated stages of auto-slim in passes whose statistics fit in memory.
//!
//! A group's statistics are dominated by its Gram matrices, [`FOLDS`] × (inputs + 1)² in f64:
//! 1.6 GB for one FFN layer of a 1B-parameter LLaMA (8,192 channels), 26 GB for its 16 layers.
//! So groups are calibrated in batches, in model order, whose statistics fit a budget
//! ([`AutoOptions::statistics_memory`], by default the model's weight bytes and at least
//! [`MIN_STATISTICS_MEMORY`]). Each batch is one run of the model over the calibration samples
//! (tract drops what follows the batch's last layer), and the batch's units are chosen and its
//! consumers repaired before its statistics go. A global budget needs every group's removal
//! order before any level is known, so its repairs take a second round of passes — unless one
//! batch holds every group, whose statistics are then kept.

use crate::autoslim::auto::{stage, AutoOptions, AutoStage, Scoring, Stages};
use crate::autoslim::calibrated::{
    calibrate, Calibrated, CalibrationRun, Criterion, MatrixForm, FOLDS,
};
use crate::autoslim::calibration::Calibration;
use crate::autoslim::choice::{order_by_scores, plan_of, uniform_level, units_of, Choice};
use crate::autoslim::prune::{group_index, repair_group, Plan, PlanGroup, Repaired, Targets};
use crate::autoslim::refit::{cross_validated_ridge, greedy_removal};
use crate::autoslim::sensitivity::{GlobalCost, Probe};
use crate::error::Result;
use crate::model::discover::Group;
use crate::model::stats::weight_of;
use crate::util::parallel::in_parallel;
use std::ops::Range;
use tract_core::internal::*;
use tract_core::ops::konst::Const;

/// The least memory given to calibration statistics by default (4 GiB): below it, small models
/// would be calibrated in several passes for no need.
pub const MIN_STATISTICS_MEMORY: usize = 4 << 30;

/// What the stages before writing produced: the plan and every repaired consumer (by the
/// calibrated stages here, or with zeros only without calibration data).
pub struct Chosen {
    /// The units to remove.
    pub plan: Plan,
    /// How they were chosen.
    pub scoring: Scoring,
    /// Per group, its repaired consumer (for groups that lose units).
    pub repaired: Vec<Option<Repaired>>,
    /// The dense model's outputs on the calibration samples, when fidelity is measured on them.
    pub dense_outputs: Vec<TVec<TValue>>,
    /// Real calibration tokens.
    pub tokens: Option<usize>,
    /// Calibration passes run.
    pub passes: usize,
}

/// Bytes of the constants of a model.
pub fn weight_bytes(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<Const>())
        .map(|c| c.val().len() * c.val().datum_type().size_of())
        .sum()
}

/// Bytes of one group's statistics: its fold Gram matrices.
pub fn statistics_bytes(model: &TypedModel, group: &Group) -> TractResult<usize> {
    let inputs = MatrixForm::of(model, group)?.inputs;
    Ok(FOLDS * (inputs + 1).pow(2) * std::mem::size_of::<f64>())
}

/// Consecutive batches of items of `sizes` bytes, each within `budget` (an item larger than
/// the budget makes a batch of its own).
pub fn batches(sizes: &[usize], budget: usize) -> Vec<Range<usize>> {
    let mut found = vec![];
    let (mut start, mut used) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        if i > start && used + size > budget {
            found.push(start..i);
            (start, used) = (i, 0);
        }
        used += size;
    }
    if start < sizes.len() {
        found.push(start..sizes.len());
    }
    found
}

/// How the units of a plan were chosen, by calibrated scores.
fn scoring_of(options: &AutoOptions) -> Scoring {
    if options.plan.is_some() {
        return Scoring::Plan;
    }
    match options.criterion {
        Criterion::Activation => Scoring::Activation,
        Criterion::Fluctuation => Scoring::Fluctuation,
        Criterion::RemovalCost => Scoring::RemovalCost,
    }
}

/// The choice of one group from its statistics: its units ordered by calibrated scores, or by
/// greedy least-squares removal with the ridge cross-validated for removing its uniform share
/// by fluctuation.
fn group_choice(
    model: &TypedModel,
    group: &Group,
    stats: &Calibrated,
    targets: &Targets,
    criterion: Criterion,
) -> TractResult<Choice> {
    let w = stats
        .form
        .weight_matrix(&*weight_of(model, group.weight)?)?;
    let scores = stats.scores(group, &w, criterion);
    Choice::new(model, group, targets, |candidates, levels, steps| {
        if criterion != Criterion::RemovalCost {
            return Ok((order_by_scores(candidates, &scores, steps), None));
        }
        if steps == 0 {
            return Ok((vec![], None));
        }
        let share = uniform_level(group, candidates, levels, targets).max(1);
        let by_scores = order_by_scores(candidates, &scores, share);
        let ridge = cross_validated_ridge(stats, &w, &units_of(candidates, &by_scores))?;
        let order = greedy_removal(stats, &w, ridge, candidates, steps)?;
        Ok((order, Some(ridge)))
    })
}

/// The calibrated stages: statistics in passes within the memory budget, the plan (chosen, or
/// the saved one), and every consumer repaired.
pub fn calibrated_plan(
    model: &TypedModel,
    groups: &[Group],
    calibration: &Calibration,
    options: &AutoOptions,
    stages: &mut Stages,
    warnings: &mut Vec<String>,
) -> Result<Chosen> {
    let budget = options
        .statistics_memory
        .unwrap_or_else(|| weight_bytes(model).max(MIN_STATISTICS_MEMORY));
    let sizes = groups
        .iter()
        .map(|g| statistics_bytes(model, g).with_context(|| format!("group `{}`", g.name)))
        .collect::<TractResult<Vec<_>>>()
        .map_err(stage("calibration"))?;
    let batches = batches(&sizes, budget);
    if batches.len() > 1 {
        tracing::info!(
            "calibration statistics take {:.1} GB: {} passes within {:.1} GB",
            sizes.iter().sum::<usize>() as f64 / 1e9,
            batches.len(),
            budget as f64 / 1e9
        );
    }
    // Choices and repairs in one round, unless a global budget needs every order first.
    let one_round = options.plan.is_some() || !options.targets.global;
    let mut round = Round::new(model, groups, calibration, options, batches.len());
    let probe = output_probe(model, calibration, options)?;
    let mut choices: Vec<Option<Choice>> = (0..groups.len()).map(|_| None).collect();
    let mut kept = None;
    for batch in &batches {
        let stats = round.statistics(batch, stages, warnings)?;
        if options.plan.is_none() {
            stages.start(AutoStage::Choose);
            let chosen = in_parallel(
                batch.len(),
                |k| {
                    let i = batch.start + k;
                    group_choice(
                        model,
                        &groups[i],
                        &stats[k],
                        &options.targets,
                        options.criterion,
                    )
                },
                &stages.counter(),
            )
            .map_err(stage("scoring"))?;
            for (k, mut choice) in chosen.into_iter().enumerate() {
                let i = batch.start + k;
                if let Some(probe) = &probe {
                    stages.start(AutoStage::Measure);
                    stages.counter()(i, groups.len());
                    probe
                        .measure(&groups[i], &mut choice, &stats[k], &options.targets)
                        .map_err(stage("measuring"))?;
                }
                choices[i] = Some(choice);
            }
        }
        if one_round {
            let entries = batch
                .clone()
                .map(|i| match (&options.plan, &choices[i]) {
                    (Some(plan), _) => saved_entry(plan, groups, i),
                    (None, Some(choice)) => Ok(own_entry(&groups[i], choice, &options.targets)),
                    (None, None) => Ok(None),
                })
                .collect::<TractResult<Vec<_>>>()
                .map_err(stage("prune"))?;
            round.repair(batch, &stats, &entries, stages)?;
        } else if batches.len() == 1 {
            kept = Some(stats);
        }
    }
    let plan = match &options.plan {
        Some(plan) => plan.clone(),
        None => {
            let choices: Vec<Choice> = choices.into_iter().flatten().collect();
            plan_of(groups, &choices, &options.targets)
        }
    };
    if !one_round {
        for batch in &batches {
            let stats = match kept.take() {
                Some(stats) => stats,
                None => round.statistics(batch, stages, warnings)?,
            };
            let entries = batch
                .clone()
                .map(|i| saved_entry(&plan, groups, i))
                .collect::<TractResult<Vec<_>>>()
                .map_err(stage("prune"))?;
            round.repair(batch, &stats, &entries, stages)?;
        }
    }
    Ok(Chosen {
        plan,
        scoring: scoring_of(options),
        repaired: round.repaired,
        dense_outputs: round.dense_outputs,
        tokens: round.tokens,
        passes: round.passes,
    })
}

/// The samples a global budget weighed by the outputs measures on, when it is asked for and
/// units are chosen here.
fn output_probe<'a>(
    model: &'a TypedModel,
    calibration: &'a Calibration,
    options: &AutoOptions,
) -> Result<Option<Probe<'a>>> {
    let targets = &options.targets;
    if options.plan.is_some()
        || !targets.global
        || targets.global_cost == GlobalCost::Reconstruction
    {
        return Ok(None);
    }
    let probe = Probe::new(model, calibration, options.repair, targets.global_cost)
        .map_err(stage("measuring"))?;
    Ok(Some(probe))
}

/// The entry of a plan for group `i`, if it has one.
fn saved_entry(plan: &Plan, groups: &[Group], i: usize) -> TractResult<Option<PlanGroup>> {
    for entry in &plan.groups {
        if group_index(groups, entry)? == i {
            return Ok(Some(entry.clone()));
        }
    }
    Ok(None)
}

/// A group's plan entry from its own choice: without a global budget it depends on nothing else.
fn own_entry(group: &Group, choice: &Choice, targets: &Targets) -> Option<PlanGroup> {
    plan_of(
        std::slice::from_ref(group),
        std::slice::from_ref(choice),
        targets,
    )
    .groups
    .pop()
}

/// The passes of the calibrated stages, and what they gathered.
struct Round<'a> {
    model: &'a TypedModel,
    groups: &'a [Group],
    calibration: &'a Calibration,
    options: &'a AutoOptions,
    batches: usize,
    passes: usize,
    tokens: Option<usize>,
    dense_outputs: Vec<TVec<TValue>>,
    repaired: Vec<Option<Repaired>>,
}

impl<'a> Round<'a> {
    fn new(
        model: &'a TypedModel,
        groups: &'a [Group],
        calibration: &'a Calibration,
        options: &'a AutoOptions,
        batches: usize,
    ) -> Round<'a> {
        Round {
            model,
            groups,
            calibration,
            options,
            batches,
            passes: 0,
            tokens: None,
            dense_outputs: vec![],
            repaired: (0..groups.len()).map(|_| None).collect(),
        }
    }

    /// One pass over the calibration samples for the groups of `batch`. The last pass of the
    /// first round also keeps the dense outputs, when fidelity is measured on the calibration
    /// samples (it runs the model to its end anyway).
    fn statistics(
        &mut self,
        batch: &Range<usize>,
        stages: &mut Stages,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Calibrated>> {
        stages.start(AutoStage::Calibrate);
        let groups = &self.groups[batch.clone()];
        let keep_outputs = self.options.heldout.is_none()
            && self.passes + 1 == self.batches
            && self.dense_outputs.is_empty();
        let CalibrationRun { stats, outputs } = calibrate(
            self.model,
            groups,
            self.calibration,
            keep_outputs,
            &stages.counter(),
        )
        .map_err(stage("calibration"))?;
        self.passes += 1;
        if self.passes <= self.batches {
            warnings.extend(crate::autoslim::auto::mask_warnings(
                self.model,
                groups,
                &stats,
                self.calibration,
            ));
        }
        self.tokens = self.tokens.or(stats.first().map(|s| s.tokens as usize));
        if keep_outputs {
            self.dense_outputs = outputs;
        }
        Ok(stats)
    }

    /// Repairs the consumers of the groups of `batch` that lose units under `entries`.
    fn repair(
        &mut self,
        batch: &Range<usize>,
        stats: &[Calibrated],
        entries: &[Option<PlanGroup>],
        stages: &mut Stages,
    ) -> Result<()> {
        stages.start(AutoStage::Repair);
        let counter = stages.counter();
        for (k, entry) in entries.iter().enumerate() {
            counter(k, entries.len());
            let Some(entry) = entry.as_ref().filter(|e| !e.removed.is_empty()) else {
                continue;
            };
            let i = batch.start + k;
            let repaired = repair_group(
                self.model,
                &self.groups[i],
                entry,
                Some(&stats[k]),
                self.options.repair,
            )
            .map_err(stage("prune"))?;
            self.repaired[i] = Some(repaired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_the_budget_in_order() {
        assert_eq!(batches(&[3, 3, 3, 3], 7), vec![0..2, 2..4]);
        assert_eq!(batches(&[3, 3, 3, 3], 12), vec![0..4]);
        // An item over the budget goes alone.
        assert_eq!(batches(&[1, 9, 1], 5), vec![0..1, 1..2, 2..3]);
        assert_eq!(batches(&[], 5), Vec::<Range<usize>>::new());
    }
}
