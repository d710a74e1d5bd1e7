//! Saturation: run the rules over the e-graph under explicit limits and say why it stopped.

use crate::egraph::analysis::{SlimAnalysis, SlimGraph};
use crate::egraph::lang::TensorLang;
use crate::rules::apply::rewrite;
use crate::rules::parser::Rule;
use egg::{Runner, StopReason};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bounds on saturation.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Rule iterations at most.
    pub iterations: usize,
    /// E-nodes at most.
    pub nodes: usize,
    /// Wall-clock time at most.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 64,
            nodes: 200_000,
            time: Duration::from_secs(20),
        }
    }
}

/// What saturation did.
#[derive(Clone, Debug, Serialize)]
pub struct SaturationReport {
    /// `saturated`, or which limit stopped it.
    pub stop_reason: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub enodes: usize,
    /// E-classes at the end.
    pub eclasses: usize,
    /// Rule instantiations refused because their result did not type-check (a wrong rule).
    pub refused_instantiations: usize,
    /// How many times each rule that fired was applied.
    pub applied: BTreeMap<String, usize>,
}

/// Runs `rules` on the e-graph until saturation or a limit.
pub fn saturate(
    egraph: SlimGraph,
    rules: &[Rule],
    limits: &Limits,
) -> Result<(SlimGraph, SaturationReport), String> {
    let refused = Arc::new(AtomicUsize::new(0));
    let rewrites = rules
        .iter()
        .map(|r| {
            rewrite(r, refused.clone()).map_err(|e| format!("{}: rule `{}`: {e}", r.origin, r.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runner: Runner<TensorLang, SlimAnalysis> = Runner::new(SlimAnalysis::default())
        .with_egraph(egraph)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .with_scheduler(egg::SimpleScheduler)
        .run(&rewrites);
    let stop_reason = match runner.stop_reason.as_ref() {
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(s)) => format!("time limit ({s:.1}s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".to_string(),
    };
    let mut applied = BTreeMap::new();
    for iteration in &runner.iterations {
        for (rule, n) in &iteration.applied {
            *applied.entry(rule.to_string()).or_insert(0) += n;
        }
    }
    let mut egraph = runner.egraph;
    egraph.rebuild();
    let report = SaturationReport {
        stop_reason,
        iterations: runner.iterations.len(),
        enodes: egraph.total_number_of_nodes(),
        eclasses: egraph.number_of_classes(),
        refused_instantiations: refused.load(Ordering::Relaxed),
        applied,
    };
    Ok((egraph, report))
}
