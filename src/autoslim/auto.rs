//! Auto-slim end to end: from a dense model and target sparsities to a slimmed model, with its
//! plan and a report of how close it stays to the dense model.
//!
//! discover groups → (calibrate) → score and choose, or take a saved plan → write zeros (and bias
//! compensation) → the slimming pass → fidelity against the dense model.

use crate::autoslim::calibration::Calibration;
use crate::autoslim::prune::{
    apply, choose, group_for, magnitude_scores, Plan, PlanGroup, Pruned, Targets,
};
use crate::error::{Result, SlimError};
use crate::io::onnx::writeback::Cut;
use crate::model::discover::{groups, Group, Kind};
use crate::model::stats::{activation_stats, capture, GroupStats};
use crate::model::verify::{fidelity, random_inputs, verify, OutputFidelity};
use crate::pass::report::Report;
use crate::pass::slimmer::{Slimmed, Slimmer};
use serde::{Serialize, Serializer};
use std::fmt;
use tract_core::internal::*;

/// What to do.
#[derive(Clone, Debug)]
pub struct AutoOptions {
    /// How much to remove, when no plan is given.
    pub targets: Targets,
    /// A saved plan to apply instead of choosing units.
    pub plan: Option<Plan>,
    /// Where a saved plan came from (for errors).
    pub plan_origin: String,
    /// Calibration inputs: activation-aware scores and bias compensation.
    pub calibration: Option<Calibration>,
    /// Add the removed units' mean contribution to the consumers' biases (needs calibration).
    pub compensation: bool,
    /// Seed of the random inputs fidelity is measured on without calibration data.
    pub seed: u64,
    /// How many random samples to measure fidelity on without calibration data.
    pub random_samples: usize,
}

impl AutoOptions {
    /// Choose units for `targets` by magnitude, measure fidelity on 4 random inputs (seed 0);
    /// compensation on once calibration data is given.
    pub fn new(targets: Targets) -> AutoOptions {
        AutoOptions {
            targets,
            plan: None,
            plan_origin: String::new(),
            calibration: None,
            compensation: true,
            seed: 0,
            random_samples: 4,
        }
    }
}

/// One group's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct GroupOutcome {
    /// FFN channels or heads.
    pub kind: Kind,
    /// Position among the groups of its kind.
    pub layer: usize,
    /// The consumer's node name.
    pub name: String,
    /// Units before.
    pub units: usize,
    /// Units kept.
    pub kept: usize,
}

/// How the removed units were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// By weight magnitude (no calibration data).
    Magnitude,
    /// By activation-aware scores on calibration data.
    Activation,
    /// Taken from a saved plan.
    Plan,
}

impl fmt::Display for Scoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scoring::Magnitude => "magnitude",
            Scoring::Activation => "activation",
            Scoring::Plan => "plan",
        })
    }
}

/// What fidelity to the dense model was measured on.
#[derive(Clone, Debug, PartialEq)]
pub enum FidelityInputs {
    /// The calibration samples.
    Calibration {
        /// How many.
        samples: usize,
    },
    /// Seeded random inputs.
    Random {
        /// How many.
        samples: usize,
        /// The first seed.
        seed: u64,
    },
}

impl fmt::Display for FidelityInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FidelityInputs::Calibration { samples } => {
                write!(f, "calibration data, {samples} samples")
            }
            FidelityInputs::Random { samples, seed } => {
                write!(f, "{samples} seeded random inputs (seed {seed})")
            }
        }
    }
}

/// Written as its one-line description (as in the report table).
impl Serialize for FidelityInputs {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What auto-slim did.
#[derive(Clone, Debug, Serialize)]
pub struct AutoReport {
    /// How the removed units were chosen.
    pub scoring: Scoring,
    /// Whether removed units' mean contributions went into the biases.
    pub compensation: bool,
    /// Per group, how many units were kept.
    pub groups: Vec<GroupOutcome>,
    /// Fidelity of the slimmed model to the dense one, per output.
    pub fidelity: Vec<OutputFidelity>,
    /// What fidelity was measured on.
    pub fidelity_inputs: FidelityInputs,
    /// Things the user should know (e.g. scores without calibration data).
    pub warnings: Vec<String>,
    /// The slimming pass's report on the pruned model.
    pub slim: Report,
}

/// The result: the pruned full-size model, the slimmed one, the plan and the report.
pub struct AutoSlimmed {
    /// The dense model with the plan written in (zeros, compensated biases), full size.
    pub pruned: TypedModel,
    /// The pruned model after the slimming pass.
    pub slimmed: TypedModel,
    /// The units removed from each group.
    pub plan: Plan,
    /// Per plan entry, what bias compensation added to the consumer's bias.
    pub compensations: Vec<Option<Tensor>>,
    /// What was done and how close the result stays to the dense model.
    pub report: AutoReport,
}

impl AutoSlimmed {
    /// The plan as cuts of the source ONNX file that remove nothing: every unit kept, the
    /// removed ones zeroed in their consumer, compensation in its bias.
    pub fn onnx_edits(&self) -> TractResult<Vec<Cut>> {
        self.plan
            .groups
            .iter()
            .zip(&self.compensations)
            .filter(|(p, _)| !p.removed.is_empty())
            .map(|(p, delta)| {
                let bias_delta = delta
                    .as_ref()
                    .map(|d| {
                        Ok::<_, TractError>(
                            d.cast_to::<f32>()?
                                .try_as_plain_ram()?
                                .as_slice::<f32>()?
                                .to_vec(),
                        )
                    })
                    .transpose()?;
                Ok(Cut {
                    kind: p.kind,
                    consumer: p.name.clone(),
                    units: p.units,
                    kept: (0..p.units).collect(),
                    zeroed: p.removed.clone(),
                    bias_delta,
                })
            })
            .collect()
    }
}

fn stage(stage: &'static str) -> impl Fn(TractError) -> SlimError {
    move |e| SlimError::stage(stage, e)
}

/// Calibration statistics of every group, from one run of the model over the samples.
fn calibrate(
    model: &TypedModel,
    groups: &[Group],
    calibration: &Calibration,
) -> TractResult<Vec<GroupStats>> {
    let outlets: Vec<OutletId> = groups.iter().map(|g| g.activation).collect();
    let captured = capture(model, &outlets, &calibration.samples)?;
    groups
        .iter()
        .zip(&captured)
        .map(|(g, activations)| activation_stats(model, g, activations))
        .collect()
}

/// A sparsity asked of a kind of unit the model has no group of is an error: nothing would be
/// pruned while the user believes something was.
fn something_to_prune(groups: &[Group], targets: &Targets) -> Result<()> {
    let count = |kind: Kind| groups.iter().filter(|g| g.kind == kind).count();
    let found = format!(
        "{} FFN and {} attention groups were found",
        count(Kind::Ffn),
        count(Kind::Heads)
    );
    if targets.heads > 0.0 && count(Kind::Heads) == 0 {
        return Err(SlimError::NothingToPrune {
            what: format!("heads sparsity {} (--mha-sparsity)", targets.heads),
            reason: format!("the model has no attention group model-slim recognises (a softmax · V product whose heads reach an output projection); {found}"),
        });
    }
    if targets.ffn > 0.0 && count(Kind::Ffn) == 0 {
        return Err(SlimError::NothingToPrune {
            what: format!("FFN sparsity {} (--ffn-sparsity)", targets.ffn),
            reason: format!("the model has no FFN group model-slim recognises (a linear layer reading only what linear layers compute, through element-wise ops); {found}"),
        });
    }
    Ok(())
}

/// Checks a saved plan against the model's groups.
fn check_plan(plan: &Plan, groups: &[Group], origin: &str) -> Result<()> {
    for entry in &plan.groups {
        group_for(groups, entry).map_err(|mismatch| SlimError::Plan {
            path: origin.to_string(),
            message: mismatch.to_string(),
        })?;
    }
    Ok(())
}

/// The plan to apply: the saved one, checked against the model, or units chosen for the targets
/// by activation-aware scores (with calibration statistics) or weight magnitudes. A warning
/// goes to `warnings` when the scores are magnitudes.
fn plan_for(
    model: &TypedModel,
    groups: &[Group],
    stats: Option<&[GroupStats]>,
    options: &AutoOptions,
    warnings: &mut Vec<String>,
) -> Result<(Plan, Scoring)> {
    if let Some(plan) = &options.plan {
        check_plan(plan, groups, &options.plan_origin)?;
        return Ok((plan.clone(), Scoring::Plan));
    }
    let (scores, scoring) = match stats {
        Some(stats) => (
            stats.iter().map(|s| s.scores.clone()).collect(),
            Scoring::Activation,
        ),
        None => {
            warnings.push("no calibration data: units are chosen by weight magnitude, which is often no better than chance; give --calibration for activation-aware scores and bias compensation".to_string());
            let scores = groups
                .iter()
                .map(|g| magnitude_scores(model, g))
                .collect::<TractResult<Vec<_>>>()
                .map_err(stage("scoring"))?;
            (scores, Scoring::Magnitude)
        }
    };
    Ok((choose(groups, &scores, &options.targets), scoring))
}

/// The inputs fidelity is measured on: the calibration samples, else seeded random inputs.
fn fidelity_samples(
    model: &TypedModel,
    options: &AutoOptions,
    values: &SymbolValues,
) -> Result<(Vec<TVec<TValue>>, FidelityInputs)> {
    if let Some(c) = &options.calibration {
        let described = FidelityInputs::Calibration {
            samples: c.samples.len(),
        };
        return Ok((c.samples.clone(), described));
    }
    let samples = (0..options.random_samples as u64)
        .map(|i| random_inputs(model, options.seed + i, values))
        .collect::<TractResult<Vec<_>>>()
        .map_err(stage("fidelity"))?;
    let described = FidelityInputs::Random {
        samples: samples.len(),
        seed: options.seed,
    };
    Ok((samples, described))
}

/// Runs auto-slim on a dense (or already partly pruned) model.
pub fn auto_slim(
    model: &TypedModel,
    slimmer: &Slimmer,
    options: &AutoOptions,
) -> Result<AutoSlimmed> {
    let groups = groups(model).map_err(stage("discover"))?;
    if options.plan.is_none() {
        something_to_prune(&groups, &options.targets)?;
    }
    let mut warnings = vec![];
    let stats = options
        .calibration
        .as_ref()
        .map(|c| calibrate(model, &groups, c))
        .transpose()
        .map_err(stage("calibration"))?;
    let (plan, scoring) = plan_for(model, &groups, stats.as_deref(), options, &mut warnings)?;
    let compensate = options.compensation && stats.is_some();
    let Pruned {
        model: pruned,
        compensations,
    } = apply(
        model,
        &groups,
        &plan,
        stats.as_deref().filter(|_| compensate),
    )
    .map_err(stage("prune"))?;
    let Slimmed {
        model: slimmed,
        report: mut slim,
    } = slimmer.slim(&pruned)?;
    let values = &slimmer.nominal().values;
    // Slimming must not change the pruned model's outputs.
    let exact = verify(&pruned, &slimmed, options.seed, values).map_err(stage("verify"))?;
    slim.verification = Some(exact);
    let (samples, fidelity_inputs) = fidelity_samples(model, options, values)?;
    let fidelity = fidelity(model, &slimmed, &samples).map_err(stage("fidelity"))?;
    let groups = plan.groups.iter().map(GroupOutcome::of).collect();
    Ok(AutoSlimmed {
        pruned,
        slimmed,
        plan,
        compensations,
        report: AutoReport {
            scoring,
            compensation: compensate,
            groups,
            fidelity,
            fidelity_inputs,
            warnings,
            slim,
        },
    })
}

impl GroupOutcome {
    fn of(entry: &PlanGroup) -> GroupOutcome {
        GroupOutcome {
            kind: entry.kind,
            layer: entry.layer,
            name: entry.name.clone(),
            units: entry.units,
            kept: entry.units - entry.removed.len(),
        }
    }
}

impl AutoReport {
    /// The human-readable summary printed by the CLI.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for w in &self.warnings {
            out += &format!("warning: {w}\n");
        }
        out += &format!(
            "scores: {}; bias compensation: {}\n",
            self.scoring,
            if self.compensation { "on" } else { "off" }
        );
        out += &self.slim.table();
        for f in &self.fidelity {
            out += &format!(
                "fidelity {} vs dense ({}): cosine {:.4}, relative L2 error {:.4}\n",
                f.name, self.fidelity_inputs, f.cosine, f.relative_l2
            );
        }
        out
    }
}
