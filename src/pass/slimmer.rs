//! The pass as a whole: lower → saturate → extract → raise (→ verify), with timing and the
//! report.

use crate::egraph::extract::{choice_cost, extract, extract_forcing, Choice, GraphCost};
use crate::egraph::lower::{lower_counting, Lowered};
use crate::egraph::raise::{raise_counting, Interface};
use crate::egraph::state::{
    full_inputs_read, offer_state_cuts, spelled_as_restriction, OfferedCut,
};
use crate::error::{Result, SlimError};
use crate::io::import::{import_onnx, symbol_values, ImportOptions};
use crate::model::cost::Nominal;
use crate::model::state::{bytes_per_token, feeds_back, state_positions, StateCut, StatePair};
use crate::model::verify::verify_cut;
use crate::model::verify::{input_names, output_names};
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
    state: Vec<StatePair>,
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
            state: vec![],
        })
    }

    /// Pairs of inputs and outputs that carry state from one call to the next (a decoder
    /// step's KV cache, see [`crate::named_state_pairs`]): their slices that no kept
    /// computation reads are cut from both, so the slimmed model's interface changes (see
    /// [`StateCut`]). Pairs naming no input or output of the model, or whose output cannot be
    /// fed back as their input ([`crate::feeds_back`]), are left out.
    pub fn with_state(mut self, pairs: Vec<StatePair>) -> Slimmer {
        self.state = pairs;
        self
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

    /// The (input, output) positions of `model`'s state pairs, as a loop of calls feeds them
    /// back (see [`crate::Expected::of_state`]).
    pub fn state_loop(&self, model: &TypedModel) -> Vec<(usize, usize)> {
        self.state_positions(model)
            .into_iter()
            .map(|(_, input, output)| (input, output))
            .collect()
    }

    /// The state pairs of [`Slimmer::with_state`] the model has, with their input and output
    /// positions: those whose output can be fed back as their input ([`feeds_back`]).
    fn state_positions(&self, model: &TypedModel) -> Vec<(StatePair, usize, usize)> {
        let (Ok(inputs), Ok(outputs)) = (input_names(model), output_names(model)) else {
            return vec![];
        };
        state_positions(&self.state, &inputs, &outputs)
            .into_iter()
            .filter(|(_, input, output)| {
                let facts = (model.input_fact(*input), model.output_fact(*output));
                matches!(facts, (Ok(i), Ok(o)) if feeds_back(i, o))
            })
            .collect()
    }

    /// Bytes of state per token of `model`'s pairs, with `cuts` (see [`bytes_per_token`]).
    fn state_bytes(&self, model: &TypedModel, cuts: &[StateCut]) -> usize {
        self.state_positions(model)
            .iter()
            .filter_map(|(pair, input, output)| {
                let input = model.input_fact(*input).ok()?;
                let output = model.output_fact(*output).ok()?;
                let cut = cuts.iter().find(|c| c.pair == *pair);
                bytes_per_token(input, output, cut)
            })
            .sum()
    }

    /// Stages 2b and 3 for a model with state pairs: cuts are offered, the rules carry them
    /// back (a second saturation, whose report `saturation` is extended with), and extraction
    /// keeps the cuts whose original input the chosen graph no longer reads (the others are
    /// extracted again with their restricted input spelled as a restriction of the original).
    /// The saturated model's outputs become the restricted ones of the cuts kept.
    fn extract_cutting_state(
        &self,
        model: &TypedModel,
        saturated: Lowered,
        saturation: &mut SaturationReport,
    ) -> Result<(Lowered, Choice, GraphCost, Vec<OfferedCut>)> {
        let pairs = self.state_positions(model);
        let mut saturated = saturated;
        let offered = offer_state_cuts(&mut saturated.egraph, &saturated.outputs, &pairs);
        if offered.is_empty() {
            let (choice, cost) = self.extract(&saturated);
            return Ok((saturated, choice, cost, vec![]));
        }
        let (mut saturated, again) = self.saturate(saturated)?;
        *saturation = std::mem::take(saturation).then(again);
        self.announce(Stage::Extract);
        let mut held: Vec<bool> = vec![true; offered.len()];
        loop {
            let egraph = &saturated.egraph;
            let mut roots = saturated.outputs.clone();
            let mut forced = HashMap::new();
            for (cut, held) in offered.iter().zip(&held) {
                if *held {
                    roots[cut.cut.output] = egraph.find(cut.restricted_output);
                } else {
                    let (class, spelled) = spelled_as_restriction(egraph, cut);
                    forced.insert(class, spelled);
                }
            }
            let choice = extract_forcing(egraph, &roots, &self.nominal, &forced)
                .ok_or_else(|| SlimError::stage("extract", "no graph without cycles"))?;
            let kept: Vec<OfferedCut> = offered
                .iter()
                .zip(&held)
                .filter(|(_, held)| **held)
                .map(|(cut, _)| cut.clone())
                .collect();
            let read = full_inputs_read(&choice, &kept);
            if read.is_empty() {
                let cost = choice_cost(egraph, &self.nominal, &choice);
                saturated.outputs = roots;
                return Ok((saturated, choice, cost, kept));
            }
            for (cut, held) in offered.iter().zip(held.iter_mut()) {
                *held &= !read.contains(&cut.cut.input);
            }
        }
    }

    /// Stage 4: the chosen graph as a tract model with `model`'s inputs, outputs and names.
    pub fn raise(
        &self,
        model: &TypedModel,
        saturated: &Lowered,
        choice: &Choice,
    ) -> Result<TypedModel> {
        self.raise_cut(model, saturated, choice, &[])
    }

    /// [`Slimmer::raise`] with the inputs of `cuts` restricted.
    fn raise_cut(
        &self,
        model: &TypedModel,
        saturated: &Lowered,
        choice: &Choice,
        cuts: &[OfferedCut],
    ) -> Result<TypedModel> {
        self.announce(Stage::Raise);
        let restricted_inputs: Vec<(usize, u32)> = cuts
            .iter()
            .map(|c| (c.cut.input, c.restricted_input))
            .collect();
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
            restricted_inputs: &restricted_inputs,
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
        let (saturated, mut saturation) = self.saturate(lowered)?;
        let saturate_ms = ms(clock);

        let clock = Instant::now();
        let (saturated, choice, cost_after, cuts) =
            self.extract_cutting_state(model, saturated, &mut saturation)?;
        let extract_ms = ms(clock);

        // Extraction is greedy: never hand back something the cost model says is worse.
        let kept_original = cost_after.total() > cost_before.total();
        let clock = Instant::now();
        let slim = if kept_original {
            model.clone()
        } else {
            self.raise_cut(model, &saturated, &choice, &cuts)?
        };
        let state_cuts: Vec<StateCut> = if kept_original {
            vec![]
        } else {
            cuts.into_iter().map(|c| c.cut).collect()
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
            state_pairs: self.state_positions(model).len(),
            state_bytes_per_token_before: self.state_bytes(model, &[]),
            state_bytes_per_token_after: self.state_bytes(model, &state_cuts),
            state_cuts,
        };
        let mut slimmed = Slimmed {
            model: slim,
            report,
        };
        if let Some(seed) = self.verification {
            self.announce(Stage::Verify);
            let v = verify_cut(
                model,
                &slimmed.model,
                (&self.state_loop(model), &slimmed.report.state_cuts),
                seed,
                &self.nominal.values,
            )
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
