//! Auto-slim end to end: from a dense model and target sparsities to a slimmed model, with its
//! plan and a report of how close it stays to the dense model.
//!
//! discover groups → (calibrate over real tokens) → score and choose, or take a saved plan →
//! write zeros and repair the consumers (bias compensation or a least-squares refit) → the
//! slimming pass → fidelity against the dense model (on held-out data when given).
//! The calibrated stages run in passes whose statistics fit in memory
//! ([`crate::autoslim::passes`]).

use crate::autoslim::calibrated::{Calibrated, Criterion};
use crate::autoslim::calibration::Calibration;
use crate::autoslim::choice::{choose, KvLayout};
use crate::autoslim::passes::{calibrated_plan, Chosen};
use crate::autoslim::prune::{
    group_for, group_index, magnitude_scores, write_repairs, zeroed_consumers, Plan, PlanGroup,
    Pruned, Repair, Targets,
};
use crate::autoslim::sensitivity::GlobalCost;
use crate::error::{Result, SlimError};
use crate::io::onnx::writeback::{Cut, Refit};
use crate::model::discover::{groups, Group, Kind};
use crate::model::stats::weight_of;
use crate::model::verify::{
    fidelity, fidelity_to_outputs, output_names, random_inputs, Expected, OutputFidelity,
};
use crate::pass::report::Report;
use crate::pass::slimmer::{Slimmed, Slimmer};
use serde::{Serialize, Serializer};
use std::fmt;
use std::time::Instant;
use tract_core::internal::*;

/// What to do.
#[derive(Clone)]
pub struct AutoOptions {
    /// How much to remove, when no plan is given.
    pub targets: Targets,
    /// A saved plan to apply instead of choosing units.
    pub plan: Option<Plan>,
    /// Where a saved plan came from (for errors).
    pub plan_origin: String,
    /// Calibration inputs: activation-aware scores and the consumers' repair.
    pub calibration: Option<Calibration>,
    /// Samples fidelity is measured on, not used for calibration.
    pub heldout: Option<Calibration>,
    /// How calibrated scores rank units.
    pub criterion: Criterion,
    /// How the consumers of removed units are repaired (needs calibration).
    pub repair: Repair,
    /// Seed of the random inputs fidelity is measured on without calibration data.
    pub seed: u64,
    /// How many random samples to measure fidelity on without calibration data.
    pub random_samples: usize,
    /// Told as work advances (progress display).
    pub observer: Option<AutoObserver>,
    /// Bytes calibration statistics may take at once (groups are calibrated in as many passes
    /// as that needs); `None`: the model's weight bytes, at least 4 GiB.
    pub statistics_memory: Option<usize>,
}

/// A stage of auto-slim, as announced to an [`AutoObserver`] and timed in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoStage {
    /// One run of the model over the calibration samples, gathering every group's statistics.
    Calibrate,
    /// Scoring units and choosing which go (greedy removal per group).
    Choose,
    /// With a global budget weighed by the outputs: the model run with each group cut alone.
    Measure,
    /// Writing zeros and repairing the consumers (a refit per group).
    Repair,
    /// The slimming pass and its check on the pruned model.
    Slim,
    /// Dense and slimmed models run on the fidelity samples.
    Fidelity,
}

impl fmt::Display for AutoStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AutoStage::Calibrate => "calibration",
            AutoStage::Choose => "choice",
            AutoStage::Measure => "measurement",
            AutoStage::Repair => "repair",
            AutoStage::Slim => "slimming",
            AutoStage::Fidelity => "fidelity",
        })
    }
}

/// Called as auto-slim advances: the stage, the items done and the items in all (samples or
/// groups; 0 of 0 when a stage is not counted).
pub type AutoObserver = Arc<dyn Fn(AutoStage, usize, usize) + Send + Sync>;

/// How long a stage took.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StageTime {
    /// The stage.
    pub stage: AutoStage,
    /// Wall-clock milliseconds.
    pub ms: u64,
}

/// Announces progress and times the stages (a stage entered again adds to its time).
pub(crate) struct Stages<'a> {
    observer: Option<&'a AutoObserver>,
    times: Vec<StageTime>,
    started: Instant,
    current: Option<AutoStage>,
}

impl<'a> Stages<'a> {
    fn new(observer: Option<&'a AutoObserver>) -> Stages<'a> {
        Stages {
            observer,
            times: vec![],
            started: Instant::now(),
            current: None,
        }
    }

    /// Ends the current stage, if any, and starts `stage`.
    pub(crate) fn start(&mut self, stage: AutoStage) {
        self.finish();
        self.current = Some(stage);
        self.started = Instant::now();
        self.tell(stage, 0, 0);
    }

    /// Ends the current stage.
    fn finish(&mut self) {
        if let Some(stage) = self.current.take() {
            let ms = self.started.elapsed().as_millis() as u64;
            tracing::info!("auto-slim {stage}: {ms} ms");
            match self.times.iter_mut().find(|t| t.stage == stage) {
                Some(time) => time.ms += ms,
                None => self.times.push(StageTime { stage, ms }),
            }
        }
    }

    fn tell(&self, stage: AutoStage, done: usize, total: usize) {
        if let Some(observer) = self.observer {
            observer(stage, done, total);
        }
    }

    /// A counter for the current stage.
    pub(crate) fn counter(&self) -> impl Fn(usize, usize) + Sync + '_ {
        let stage = self.current;
        move |done, total| {
            if let Some(stage) = stage {
                self.tell(stage, done, total);
            }
        }
    }
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
            heldout: None,
            criterion: Criterion::RemovalCost,
            repair: Repair::LeastSquares,
            seed: 0,
            random_samples: 4,
            observer: None,
            statistics_memory: None,
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
    /// The relative ridge cross-validation chose for a least-squares refit.
    pub ridge: Option<f64>,
}

/// How the removed units were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// By weight magnitude (no calibration data).
    Magnitude,
    /// By activation-aware scores on calibration data.
    Activation,
    /// By the variance of each unit's contribution on calibration data (FLAP).
    Fluctuation,
    /// By greedy least-squares removal on calibration data.
    RemovalCost,
    /// Taken from a saved plan.
    Plan,
}

impl fmt::Display for Scoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scoring::Magnitude => "magnitude",
            Scoring::Activation => "activation",
            Scoring::Fluctuation => "fluctuation",
            Scoring::RemovalCost => "removal cost",
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
    /// Held-out samples, not used for calibration.
    Heldout {
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
            FidelityInputs::Heldout { samples } => {
                write!(f, "held-out data, {samples} samples")
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
    /// How the consumers of removed units were repaired.
    pub repair: Repair,
    /// Tokens the calibration statistics were taken over (real ones only, with a token mask).
    pub calibration_tokens: Option<usize>,
    /// Passes over the calibration samples (more than one when every group's statistics do not
    /// fit in the statistics memory at once).
    pub calibration_passes: usize,
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
    /// How long each stage took.
    pub stage_times: Vec<StageTime>,
}

/// The result: the pruned full-size model, the slimmed one, the plan and the report.
pub struct AutoSlimmed {
    /// The dense model with the plan written in (zeros, compensated biases), full size.
    pub pruned: TypedModel,
    /// The pruned model after the slimming pass.
    pub slimmed: TypedModel,
    /// The units removed from each group.
    pub plan: Plan,
    /// Per plan entry, what the repair added to the consumer's bias.
    pub compensations: Vec<Option<Tensor>>,
    /// Per plan entry, the ridge of a least-squares refit (the consumer's weights changed).
    pub ridges: Vec<Option<f64>>,
    /// What was done and how close the result stays to the dense model.
    pub report: AutoReport,
    /// The pruned model's outputs on the seeded inputs: what the slimmed one was checked against,
    /// and what a written file is checked against (without running the pruned model again).
    pub expected: Expected,
}

impl AutoSlimmed {
    /// The plan as cuts of the source ONNX file that remove nothing: every unit kept, the
    /// removed ones zeroed in their consumer, compensation in its bias, and a least-squares
    /// refit's weights in place of the consumer's (`original` is the dense model the plan was
    /// made on, whose weights the file holds).
    pub fn onnx_edits(&self, original: &TypedModel) -> TractResult<Vec<Cut>> {
        let found = groups(original)?;
        self.plan
            .groups
            .iter()
            .zip(&self.compensations)
            .zip(&self.ridges)
            .filter(|((p, _), _)| !p.removed.is_empty())
            .map(|((p, delta), ridge)| {
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
                let refit = match ridge {
                    Some(_) => Some(self.refit_of(original, &found[group_index(&found, p)?])?),
                    None => None,
                };
                Ok(Cut {
                    kind: p.kind,
                    consumer: p.name.clone(),
                    units: p.units,
                    kept: (0..p.units).collect(),
                    zeroed: p.removed.clone(),
                    bias_delta,
                    refit,
                })
            })
            .collect()
    }

    /// The refit of `group`'s consumer weight from `original` to the pruned model.
    fn refit_of(&self, original: &TypedModel, group: &Group) -> TractResult<Refit> {
        // The pruned consumer reads its weight from where the repair put it: a new constant
        // when the original one was shared.
        let slot = original
            .node(group.consumer)
            .inputs
            .iter()
            .position(|i| i.node == group.weight)
            .context("consumer does not read its weight")?;
        let refit = self.pruned.node(group.consumer).inputs[slot].node;
        Refit::between(
            &*weight_of(original, group.weight)?,
            &*weight_of(&self.pruned, refit)?,
            group.weight_units,
        )
    }
}

pub(crate) fn stage(stage: &'static str) -> impl Fn(TractError) -> SlimError {
    move |e| SlimError::stage(stage, e)
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
    let grouped = groups
        .iter()
        .any(|g| g.kind == Kind::Heads && g.kv_heads > 0 && g.kv_heads < g.units);
    if targets.kv_layout != KvLayout::Equal && !grouped {
        return Err(SlimError::NothingToPrune {
            what: format!("--kv-layout {}", targets.kv_layout),
            reason: format!("the model has no grouped-query attention (every attention group has one KV head per query head); {found}"),
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

/// A global cost measured on the outputs needs a global budget to weigh and calibration
/// samples to measure on: without either it would silently weigh nothing.
fn measurable(options: &AutoOptions) -> Result<()> {
    let targets = &options.targets;
    if targets.global_cost == GlobalCost::Reconstruction {
        return Ok(());
    }
    if !targets.global {
        return Err(SlimError::Usage(
            "a global cost weighs a global budget: set `global` too".into(),
        ));
    }
    if options.calibration.is_none() {
        return Err(SlimError::Usage(
            "a global cost measured on the outputs needs calibration samples to measure on".into(),
        ));
    }
    Ok(())
}

/// The plan to apply without calibration data: the saved one, checked against the model, or
/// units chosen for the targets by weight magnitude (with a warning in `warnings`).
fn uncalibrated_plan(
    model: &TypedModel,
    groups: &[Group],
    options: &AutoOptions,
    warnings: &mut Vec<String>,
) -> Result<(Plan, Scoring)> {
    if let Some(plan) = &options.plan {
        return Ok((plan.clone(), Scoring::Plan));
    }
    warnings.push("no calibration data: units are chosen by weight magnitude, which is often no better than chance; give --calibration for activation-aware scores and bias compensation".to_string());
    let scores = groups
        .iter()
        .map(|g| magnitude_scores(model, g))
        .collect::<TractResult<Vec<_>>>()
        .map_err(stage("scoring"))?;
    let plan = choose(model, groups, &scores, &options.targets).map_err(stage("scoring"))?;
    Ok((plan, Scoring::Magnitude))
}

/// What the user must know about the token mask: that there is none (every position of the
/// padded samples counts), or that it does not line up with a group's token axes.
pub(crate) fn mask_warnings(
    model: &TypedModel,
    groups: &[Group],
    stats: &[Calibrated],
    calibration: &Calibration,
) -> Vec<String> {
    let Some(mask) = calibration.mask else {
        return vec!["no model input is a token mask (a name containing `mask`): calibration statistics count every position, padding included".to_string()];
    };
    let name = model
        .input_outlets()
        .ok()
        .and_then(|inputs| inputs.get(mask).map(|o| model.node(o.node).name.clone()))
        .unwrap_or_default();
    groups
        .iter()
        .zip(stats)
        .filter(|(_, s)| s.unmasked_samples > 0)
        .map(|(g, s)| {
            format!(
                "the token mask `{name}` does not line up with the tokens of `{}`: every position of {} samples counted there",
                g.name, s.unmasked_samples
            )
        })
        .collect()
}

/// The inputs fidelity is measured on: held-out samples, else the calibration samples, else
/// seeded random inputs.
fn fidelity_samples(
    model: &TypedModel,
    options: &AutoOptions,
    values: &SymbolValues,
) -> Result<(Vec<TVec<TValue>>, FidelityInputs)> {
    if let Some(h) = &options.heldout {
        let described = FidelityInputs::Heldout {
            samples: h.samples.len(),
        };
        return Ok((h.samples.clone(), described));
    }
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
        measurable(options)?;
    }
    if let Some(plan) = &options.plan {
        check_plan(plan, &groups, &options.plan_origin)?;
    }
    let mut warnings = vec![];
    let mut stages = Stages::new(options.observer.as_ref());
    let chosen = match &options.calibration {
        Some(c) => calibrated_plan(model, &groups, c, options, &mut stages, &mut warnings)?,
        None => {
            stages.start(AutoStage::Choose);
            let (plan, scoring) = uncalibrated_plan(model, &groups, options, &mut warnings)?;
            let repaired = zeroed_consumers(model, &groups, &plan).map_err(stage("prune"))?;
            Chosen {
                plan,
                scoring,
                repaired,
                dense_outputs: vec![],
                tokens: None,
                passes: 0,
            }
        }
    };
    let repair = match options.calibration {
        Some(_) => options.repair,
        None => Repair::None,
    };
    stages.start(AutoStage::Repair);
    let Chosen {
        plan,
        scoring,
        repaired,
        dense_outputs,
        tokens: calibration_tokens,
        passes: calibration_passes,
    } = chosen;
    let Pruned {
        model: pruned,
        compensations,
        ridges,
    } = write_repairs(model, &groups, &plan, repaired).map_err(stage("prune"))?;
    stages.start(AutoStage::Slim);
    let Slimmed {
        model: slimmed,
        report: mut slim,
    } = slimmer.slim(&pruned)?;
    let values = &slimmer.nominal().values;
    // Slimming must not change the pruned model's outputs (over a loop of calls where the
    // model carries state).
    let states = slimmer.state_loop(&pruned);
    let expected = Expected::of_state(pruned.clone(), options.seed, values, &states)
        .map_err(stage("verify"))?;
    let verification = expected.compare_cut(slimmed.clone(), &slim.state_cuts);
    slim.verification = Some(verification.map_err(stage("verify"))?);
    // A model whose state slimming cut takes the kept slices of it: fidelity, which feeds
    // every model the same inputs, measures the pruned model, which the slimmed one computes.
    let judged = match slim.state_cuts.is_empty() {
        true => &slimmed,
        false => &pruned,
    };
    stages.start(AutoStage::Fidelity);
    let (samples, fidelity_inputs) = fidelity_samples(model, options, values)?;
    let mask = options
        .heldout
        .as_ref()
        .or(options.calibration.as_ref())
        .and_then(|c| c.mask);
    let fidelity = if dense_outputs.is_empty() {
        fidelity(model, judged, &samples, mask)
    } else {
        output_names(model)
            .and_then(|names| fidelity_to_outputs(&names, &dense_outputs, judged, &samples, mask))
    }
    .map_err(stage("fidelity"))?;
    stages.finish();
    let groups = plan
        .groups
        .iter()
        .zip(&ridges)
        .map(|(entry, ridge)| GroupOutcome::of(entry, *ridge))
        .collect();
    Ok(AutoSlimmed {
        pruned,
        slimmed,
        plan,
        compensations,
        ridges,
        report: AutoReport {
            scoring,
            repair,
            calibration_tokens,
            calibration_passes,
            groups,
            fidelity,
            fidelity_inputs,
            warnings,
            slim,
            stage_times: stages.times,
        },
        expected,
    })
}

impl GroupOutcome {
    fn of(entry: &PlanGroup, ridge: Option<f64>) -> GroupOutcome {
        GroupOutcome {
            kind: entry.kind,
            layer: entry.layer,
            name: entry.name.clone(),
            units: entry.units,
            kept: entry.units - entry.removed.len(),
            ridge,
        }
    }
}

impl AutoReport {
    /// The kept widths per layer, one line per kind that lost units: `kept FFN channels per
    /// layer: 1075 1075 … (of 1536)`.
    fn widths(&self) -> String {
        let mut out = String::new();
        for (kind, what) in [(Kind::Ffn, "FFN channels"), (Kind::Heads, "heads")] {
            let of_kind: Vec<&GroupOutcome> =
                self.groups.iter().filter(|g| g.kind == kind).collect();
            if of_kind.iter().all(|g| g.kept == g.units) {
                continue;
            }
            let kept: Vec<String> = of_kind.iter().map(|g| g.kept.to_string()).collect();
            let mut units: Vec<usize> = of_kind.iter().map(|g| g.units).collect();
            units.dedup();
            let units: Vec<String> = units.iter().map(usize::to_string).collect();
            out += &format!(
                "kept {what} per layer: {} (of {})\n",
                kept.join(" "),
                units.join("/")
            );
        }
        out
    }

    /// The human-readable summary printed by the CLI.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for w in &self.warnings {
            out += &format!("warning: {w}\n");
        }
        out += &format!("scores: {}; repair: {}", self.scoring, self.repair);
        if let Some(tokens) = self.calibration_tokens {
            out += &format!("; calibration statistics over {tokens} tokens");
            if self.calibration_passes > 1 {
                out += &format!(
                    " in {} passes (within the statistics memory)",
                    self.calibration_passes
                );
            }
        }
        out += "\n";
        out += &self.widths();
        let times: Vec<String> = self
            .stage_times
            .iter()
            .map(|t| format!("{} {:.1} s", t.stage, t.ms as f64 / 1000.0))
            .collect();
        out += &format!("auto-slim time: {}\n", times.join(", "));
        out += &self.slim.table();
        for f in &self.fidelity {
            out += &format!(
                "fidelity {} vs dense ({}): cosine {:.4}, relative L2 error {:.4}",
                f.name, self.fidelity_inputs, f.cosine, f.relative_l2
            );
            if let Some(pooled) = f.pooled_cosine {
                out += &format!(", pooled-embedding cosine {pooled:.4}");
            }
            if let Some(same) = f.same_next_token {
                out += &format!(", same next token on {:.1}% of real tokens", same * 100.0);
            }
            out += "\n";
        }
        out
    }
}
