//! Rule soundness checking: rules are saturated on random models ([`crate::testing::random`]) — so they
//! fire exactly where their guards hold — and then *every* node of every e-class is extracted in
//! turn, rebuilt and run: each must compute what the original model computes. A rule that
//! rewrites to something different is caught by the alternative it adds.
//!
//! ```
//! use model_slim::testing::check::check_rules;
//! let report = check_rules(&model_slim::default_rules().unwrap(), 6, 0).unwrap();
//! assert!(report.failures.is_empty());
//! ```

use crate::egraph::analysis::SlimGraph;
use crate::egraph::extract::extract_forcing;
use crate::egraph::lower::lower;
use crate::egraph::raise::{raise, Interface};
use crate::model::cost::Nominal;
use crate::model::verify::{compare_output, random_inputs, run};
use crate::rules::parser::Rule;
use crate::rules::saturate::{saturate, Limits};
use crate::testing::random::{
    random_attention, random_ffn, random_grouped_attention, random_stack, Planted,
};
use crate::testing::random_conv::random_conv;
use egg::Id;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use tract_core::internal::*;

/// What a check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Random models tried.
    pub models: usize,
    /// Alternatives extracted, rebuilt and compared.
    pub alternatives: usize,
    /// Alternatives that no extraction can use, because choosing them makes an output depend on
    /// itself (`x = keep(everything, x)` holds, but `x` cannot be computed from itself): they
    /// are counted, not checked.
    pub unextractable: usize,
    /// How often each rule fired over all models.
    pub fired: BTreeMap<String, usize>,
    /// Alternatives that compute something else, described with the model's seed.
    pub failures: Vec<String>,
    /// Rule outputs refused as ill-typed (a wrong rule too).
    pub refused: usize,
}

/// The random model of a seed: FFNs, attention blocks, grouped-query attention blocks and
/// stacks in turn, half of them decluttered as the pass gets models from tract.
pub fn model_for_seed(seed: u64) -> Planted {
    let mut rng = StdRng::seed_from_u64(seed);
    let planted = match seed % 4 {
        0 => random_ffn(&mut rng),
        1 => random_attention(&mut rng),
        2 => random_grouped_attention(&mut rng),
        _ => random_stack(&mut rng),
    };
    decluttered_half_the_time(planted, &mut rng)
}

/// The random convolutional model of a seed (a family of its own, so that the seeds of
/// [`model_for_seed`] keep naming the models they always did).
pub fn conv_model_for_seed(seed: u64) -> Planted {
    let mut rng = StdRng::seed_from_u64(seed);
    let planted = random_conv(&mut rng);
    decluttered_half_the_time(planted, &mut rng)
}

fn decluttered_half_the_time(planted: Planted, rng: &mut StdRng) -> Planted {
    if rng.gen_bool(0.5) {
        let model = planted.model.clone().into_decluttered();
        Planted {
            model: model.unwrap_or(planted.model),
            ..planted
        }
    } else {
        planted
    }
}

/// Checks `rules` on the random models of seeds `first_seed..first_seed + models`, and on the
/// convolutional models of every second of those seeds.
pub fn check_rules(rules: &[Rule], models: usize, first_seed: u64) -> TractResult<CheckReport> {
    let mut report = CheckReport::default();
    for seed in first_seed..first_seed + models as u64 {
        let model = model_for_seed(seed).model;
        check_model(
            rules,
            &model,
            seed,
            &format!("model of seed {seed}"),
            &mut report,
        )?;
        if seed % 2 == 0 {
            let model = conv_model_for_seed(seed).model;
            let name = format!("conv model of seed {seed}");
            check_model(rules, &model, seed, &name, &mut report)?;
        }
    }
    Ok(report)
}

fn check_model(
    rules: &[Rule],
    model: &TypedModel,
    seed: u64,
    name: &str,
    report: &mut CheckReport,
) -> TractResult<()> {
    let inputs = random_inputs(model, seed, &SymbolValues::default())?;
    let expected = run(model, inputs.clone())?;
    let lowered = lower(model)?;
    let (egraph, saturation) =
        saturate(lowered.egraph, rules, &Limits::default()).map_err(|e| anyhow!(e))?;
    report.models += 1;
    report.refused += saturation.refused_instantiations;
    for (rule, n) in saturation.applied {
        *report.fired.entry(rule).or_insert(0) += n;
    }
    let names: HashMap<Id, String> = lowered
        .names
        .iter()
        .map(|(id, n)| (egraph.find(*id), n.clone()))
        .collect();
    let outputs: Vec<Id> = lowered.outputs.iter().map(|o| egraph.find(*o)).collect();
    let interface = Interface {
        input_names: &lowered.input_names,
        output_names: &lowered.output_names,
        outputs: &outputs,
        restricted_inputs: &[],
        names: &names,
        symbols: &model.symbols,
    };
    let checked = check_alternatives(&egraph, &interface, &inputs, &expected, name)?;
    report.alternatives += checked.compared;
    report.unextractable += checked.unextractable;
    report.failures.extend(checked.failures);
    Ok(())
}

/// What [`check_alternatives`] found on one e-graph.
#[derive(Debug, Default)]
pub struct Checked {
    /// Alternatives extracted, rebuilt and compared.
    pub compared: usize,
    /// Alternatives no extraction can use (a cycle through them).
    pub unextractable: usize,
    /// A description of each alternative that computes something else.
    pub failures: Vec<String>,
}

/// Extracts each node of each e-class in turn (where the outputs need it), rebuilds and runs
/// the model, and compares with `expected`; failures are described starting with `label`.
pub fn check_alternatives(
    egraph: &SlimGraph,
    interface: &Interface,
    inputs: &TVec<TValue>,
    expected: &TVec<TValue>,
    label: &str,
) -> TractResult<Checked> {
    let nominal = Nominal::default();
    let mut checked = Checked::default();
    for class in egraph.classes() {
        if class.nodes.len() < 2 || class.data.fact.is_none() {
            continue;
        }
        for node in &class.nodes {
            let forced = HashMap::from([(class.id, node.clone())]);
            let Some(choice) = extract_forcing(egraph, interface.outputs, &nominal, &forced) else {
                checked.unextractable += 1;
                continue;
            };
            if !choice.nodes.contains_key(&class.id) {
                continue; // not needed by the outputs
            }
            checked.compared += 1;
            let got = raise(egraph, &choice, interface).and_then(|m| run(&m, inputs.clone()));
            let differs = match got {
                Ok(got) => outputs_differ(expected, &got)?,
                Err(e) => Some(format!("does not run: {e:#}")),
            };
            if let Some(how) = differs {
                checked.failures.push(format!(
                    "{label}: the alternative {node:?} of e-class {} {how}",
                    class.id
                ));
            }
        }
    }
    Ok(checked)
}

/// How `got` differs from `expected` beyond float rounding (see [`compare_output`]).
fn outputs_differ(expected: &TVec<TValue>, got: &TVec<TValue>) -> TractResult<Option<String>> {
    for (ix, (e, g)) in expected.iter().zip(got.iter()).enumerate() {
        let diff = compare_output(format!("output {ix}"), e, g)?;
        if !diff.passed {
            return Ok(Some(format!(
                "{} differs by {}",
                diff.name, diff.max_abs_diff
            )));
        }
    }
    Ok(None)
}
