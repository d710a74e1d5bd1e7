//! The pass as a whole: lower → saturate → extract → raise (→ verify), with timing and the
//! report.

use crate::egraph::extract::{choice_cost, extract, Choice, GraphCost};
use crate::egraph::lower::{lower_counting, Lowered};
use crate::egraph::raise::{raise_counting, Interface};
use crate::error::{Result, SlimError};
use crate::io::import::{import_onnx, symbol_values, ImportOptions};
use crate::model::cost::Nominal;
use crate::model::verify::verify;
use crate::pass::report::{attention_layers, ffn_layers, flops, params, Report, StageTimes};
use crate::rules::parser::{default_rules, load_dir, Rule};
use crate::rules::saturate::{saturate, Limits, SaturationReport};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tract_core::internal::*;

/// A stage of the pass, as announced to an observer (see [`Slimmer::with_observer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// tract graph → e-graph.
    Lower,
    /// Rules run to saturation.
    Saturate,
    /// The cheapest equivalent graph is chosen.
    Extract,
    /// The chosen graph becomes a tract model.
    Raise,
    /// Original and slimmed models run on the same inputs.
    Verify,
}

/// Called as a stage starts, with `done` and `total` 0, and, in the stages that count their
/// work (lowering: source nodes, constants scanned for zeros among them; raising: chosen nodes,
/// kept weights copied among them), as the work goes: `(stage, done, total)`.
pub type Observer = Arc<dyn Fn(Stage, usize, usize) + Send + Sync>;

/// A configured slimming pass: a builder, then [`Slimmer::slim`] on any number of models.
///
/// ```
/// use model_slim::{EncoderSpec, Slimmer};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = EncoderSpec::demo().build()?; // any typed tract model
/// let slimmed = Slimmer::new()?.with_verification(Some(0)).slim(&model)?;
/// assert!(slimmed.report.params_after < slimmed.report.params_before);
/// assert!(slimmed.report.verification.unwrap().passed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Slimmer {
    rules: Vec<Rule>,
    limits: Limits,
    nominal: Nominal,
    verification: Option<u64>,
    observer: Option<Observer>,
}

/// A slimmed model and what was done to it.
pub struct Slimmed {
    /// The slimmed model, typed and decluttered-ready (its inputs and outputs are the original's).
    pub model: TypedModel,
    /// What was found and done (serializable as JSON).
    pub report: Report,
}

impl Slimmer {
    /// A pass with the default rules and limits, without verification.
    pub fn new() -> Result<Slimmer> {
        Ok(Slimmer {
            rules: default_rules()?,
            limits: Limits::default(),
            nominal: Nominal::default(),
            verification: None,
            observer: None,
        })
    }

    /// Runs original and slimmed models on random inputs of this seed after slimming (`None`:
    /// do not); outputs that differ beyond float rounding make [`Slimmer::slim`] fail with
    /// [`SlimError::Verification`].
    pub fn with_verification(mut self, seed: Option<u64>) -> Slimmer {
        self.verification = seed;
        self
    }

    /// Calls `observer` as each stage starts (progress display).
    pub fn with_observer(mut self, observer: Observer) -> Slimmer {
        self.observer = Some(observer);
        self
    }

    /// Imports an ONNX file (see [`crate::io::import::import_onnx`]) and slims it; the `--set`
    /// values of `options` also value symbols for costing and verification.
    pub fn slim_onnx(&self, path: &Path, options: &ImportOptions) -> Result<(TypedModel, Slimmed)> {
        let model = import_onnx(path, options)?;
        let values = symbol_values(&model, &options.sets);
        let slimmed = self.clone().with_symbol_values(values).slim(&model)?;
        Ok((model, slimmed))
    }

    fn announce(&self, stage: Stage) {
        tracing::debug!(?stage, "stage starts");
        self.count(stage, 0, 0);
    }

    fn count(&self, stage: Stage, done: usize, total: usize) {
        if let Some(observer) = &self.observer {
            observer(stage, done, total);
        }
    }

    /// Adds the rules of every `*.rules` file in `dir`.
    pub fn with_rules_dir(mut self, dir: &Path) -> Result<Slimmer> {
        self.rules.extend(load_dir(dir)?);
        Ok(self)
    }

    /// Sets the saturation limits.
    pub fn with_limits(mut self, limits: Limits) -> Slimmer {
        self.limits = limits;
        self
    }

    /// Values of symbolic dimensions used when costing (others count as [`crate::NOMINAL_DIM`]).
    pub fn with_symbol_values(mut self, values: SymbolValues) -> Slimmer {
        self.nominal = Nominal { values };
        self
    }

    /// The values symbolic dimensions are costed at.
    pub fn nominal(&self) -> &Nominal {
        &self.nominal
    }

    /// Stage 1: the model as an e-graph, and the cost of the model as it is.
    pub fn lower(&self, model: &TypedModel) -> Result<(Lowered, GraphCost)> {
        self.announce(Stage::Lower);
        let progress = |done, total| self.count(Stage::Lower, done, total);
        let lowered = lower_counting(model, &progress).map_err(|e| SlimError::stage("lower", e))?;
        let before = extract(&lowered.egraph, &lowered.outputs, &self.nominal);
        let cost = choice_cost(&lowered.egraph, &self.nominal, &before);
        Ok((lowered, cost))
    }

    /// Stage 2: the rules run to saturation (within the limits) on a lowered model.
    pub fn saturate(&self, lowered: Lowered) -> Result<(Lowered, SaturationReport)> {
        self.announce(Stage::Saturate);
        let Lowered {
            egraph,
            outputs,
            input_names,
            output_names,
            names,
        } = lowered;
        let (egraph, report) = saturate(egraph, &self.rules, &self.limits)?;
        Ok((
            Lowered {
                egraph,
                outputs,
                input_names,
                output_names,
                names,
            },
            report,
        ))
    }

    /// Stage 3: the cheapest graph the e-graph holds, and its cost.
    pub fn extract(&self, saturated: &Lowered) -> (Choice, GraphCost) {
        self.announce(Stage::Extract);
        let choice = extract(&saturated.egraph, &saturated.outputs, &self.nominal);
        let cost = choice_cost(&saturated.egraph, &self.nominal, &choice);
        (choice, cost)
    }

    /// Stage 4: the chosen graph as a tract model with `model`'s inputs, outputs and names.
    pub fn raise(
        &self,
        model: &TypedModel,
        saturated: &Lowered,
        choice: &Choice,
    ) -> Result<TypedModel> {
        self.announce(Stage::Raise);
        let egraph = &saturated.egraph;
        let mut names: Vec<_> = saturated.names.iter().collect();
        names.sort();
        let mut canonical: HashMap<egg::Id, String> = HashMap::new();
        for (id, name) in names {
            canonical
                .entry(egraph.find(*id))
                .or_insert_with(|| name.clone());
        }
        let interface = Interface {
            input_names: &saturated.input_names,
            output_names: &saturated.output_names,
            outputs: &saturated.outputs,
            names: &canonical,
            symbols: &model.symbols,
        };
        let progress = |done, total| self.count(Stage::Raise, done, total);
        raise_counting(egraph, choice, &interface, &progress)
            .map_err(|e| SlimError::stage("raise", e))
    }

    /// Slims a typed (preferably decluttered) model: the four stages, the report, and
    /// verification when enabled.
    pub fn slim(&self, model: &TypedModel) -> Result<Slimmed> {
        let clock = Instant::now();
        let (lowered, cost_before) = self.lower(model)?;
        let lower_ms = ms(clock);

        let clock = Instant::now();
        let (saturated, saturation) = self.saturate(lowered)?;
        let saturate_ms = ms(clock);

        let clock = Instant::now();
        let (choice, cost_after) = self.extract(&saturated);
        let extract_ms = ms(clock);

        // Extraction is greedy: never hand back something the cost model says is worse.
        let kept_original = cost_after.total() > cost_before.total();
        let clock = Instant::now();
        let slim = if kept_original {
            model.clone()
        } else {
            self.raise(model, &saturated, &choice)?
        };
        let raise_ms = ms(clock);

        let report = Report {
            ffn_layers: ffn_layers(model, &slim, &self.nominal)
                .map_err(|e| SlimError::stage("report", e))?,
            attention_layers: attention_layers(model, &slim)
                .map_err(|e| SlimError::stage("report", e))?,
            params_before: params(model),
            params_after: params(&slim),
            flops_before: flops(model, &self.nominal),
            flops_after: flops(&slim, &self.nominal),
            cost_before,
            cost_after: if kept_original {
                cost_before
            } else {
                cost_after
            },
            kept_original,
            saturation,
            times: StageTimes {
                lower_ms,
                saturate_ms,
                extract_ms,
                raise_ms,
            },
            verification: None,
        };
        let mut slimmed = Slimmed {
            model: slim,
            report,
        };
        if let Some(seed) = self.verification {
            self.announce(Stage::Verify);
            let v = verify(model, &slimmed.model, seed, &self.nominal.values)
                .map_err(|e| SlimError::stage("verify", e))?;
            slimmed.report.verification = Some(v);
            if let Some(error) = slimmed.report.verification_error() {
                return Err(error);
            }
        }
        tracing::info!(
            params_before = slimmed.report.params_before,
            params_after = slimmed.report.params_after,
            "slimmed"
        );
        Ok(slimmed)
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
