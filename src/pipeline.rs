//! The pass as a whole: lower → saturate → extract → raise, with timing and the report.

use crate::cost::Nominal;
use crate::error::{Result, SlimError};
use crate::extract::{choice_cost, extract};
use crate::lower::lower;
use crate::raise::{raise, Interface};
use crate::report::{attention_layers, ffn_layers, flops, params, Report, StageTimes};
use crate::rules::{default_rules, load_dir, Rule};
use crate::saturate::{saturate, Limits};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tract_core::internal::*;

/// A configured slimming pass.
#[derive(Clone)]
pub struct Slimmer {
    rules: Vec<Rule>,
    limits: Limits,
    nominal: Nominal,
}

/// A slimmed model and what was done to it.
pub struct Slimmed {
    pub model: TypedModel,
    pub report: Report,
}

impl Slimmer {
    /// A pass with the default rules and limits.
    pub fn new() -> Result<Slimmer> {
        Ok(Slimmer {
            rules: default_rules()?,
            limits: Limits::default(),
            nominal: Nominal::default(),
        })
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

    /// Values of symbolic dimensions used when costing (others count as [`crate::cost::NOMINAL_DIM`]).
    pub fn with_symbol_values(mut self, values: SymbolValues) -> Slimmer {
        self.nominal = Nominal { values };
        self
    }

    pub fn nominal(&self) -> &Nominal {
        &self.nominal
    }

    /// Slims a typed (preferably decluttered) model.
    pub fn slim(&self, model: &TypedModel) -> Result<Slimmed> {
        let clock = Instant::now();
        let lowered = lower(model).map_err(|e| SlimError::stage("lower", e))?;
        let before = extract(&lowered.egraph, &lowered.outputs, &self.nominal);
        let cost_before = choice_cost(&lowered.egraph, &self.nominal, &before);
        let lower_ms = ms(clock);

        let clock = Instant::now();
        let (egraph, saturation) =
            saturate(lowered.egraph, &self.rules, &self.limits).map_err(|e| SlimError::Stage {
                stage: "saturate",
                message: e,
            })?;
        let saturate_ms = ms(clock);

        let clock = Instant::now();
        let choice = extract(&egraph, &lowered.outputs, &self.nominal);
        let cost_after = choice_cost(&egraph, &self.nominal, &choice);
        let extract_ms = ms(clock);

        // Extraction is greedy: never hand back something the cost model says is worse.
        let kept_original = cost_after.total() > cost_before.total();
        let clock = Instant::now();
        let slim = if kept_original {
            model.clone()
        } else {
            let mut names: Vec<_> = lowered.names.iter().collect();
            names.sort();
            let mut canonical: HashMap<egg::Id, String> = HashMap::new();
            for (id, name) in names {
                canonical
                    .entry(egraph.find(*id))
                    .or_insert_with(|| name.clone());
            }
            let interface = Interface {
                input_names: &lowered.input_names,
                output_names: &lowered.output_names,
                outputs: &lowered.outputs,
                names: &canonical,
                symbols: &model.symbols,
            };
            raise(&egraph, &choice, &interface).map_err(|e| SlimError::stage("raise", e))?
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
        Ok(Slimmed {
            model: slim,
            report,
        })
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
