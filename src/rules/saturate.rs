//! Saturation: run the rules over the e-graph under explicit limits and say why it stopped.

use crate::egraph::analysis::{SlimAnalysis, SlimGraph};
use crate::egraph::lang::TensorLang;
use crate::rules::apply::rewrite;
use crate::rules::parser::{Rule, RuleError};
use egg::Runner;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
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

/// Why saturation stopped: egg's [`egg::StopReason`], or that the rules never ran.
#[derive(Default, Clone, Debug, PartialEq)]
pub enum StopReason {
    /// No rule applies any more: every equivalent graph the rules reach is in the e-graph.
    Saturated,
    /// The iteration limit (the number run).
    IterationLimit(usize),
    /// The e-node limit (the number reached).
    NodeLimit(usize),
    /// The time limit (the seconds spent).
    TimeLimit(f64),
    /// Stopped by a hook, for the reason given.
    Other(String),
    /// The runner did not run.
    #[default]
    NotRun,
}

impl StopReason {
    fn of(reason: Option<&egg::StopReason>) -> StopReason {
        match reason {
            Some(egg::StopReason::Saturated) => StopReason::Saturated,
            Some(egg::StopReason::IterationLimit(n)) => StopReason::IterationLimit(*n),
            Some(egg::StopReason::NodeLimit(n)) => StopReason::NodeLimit(*n),
            Some(egg::StopReason::TimeLimit(s)) => StopReason::TimeLimit(*s),
            Some(egg::StopReason::Other(s)) => StopReason::Other(s.clone()),
            None => StopReason::NotRun,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Saturated => write!(f, "saturated"),
            StopReason::IterationLimit(n) => write!(f, "iteration limit ({n})"),
            StopReason::NodeLimit(n) => write!(f, "node limit ({n})"),
            StopReason::TimeLimit(s) => write!(f, "time limit ({s:.1}s)"),
            StopReason::Other(s) => write!(f, "{s}"),
            StopReason::NotRun => write!(f, "not run"),
        }
    }
}

/// Written as its one-line description (as in the report table).
impl Serialize for StopReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What saturation did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SaturationReport {
    /// Why it stopped.
    pub stop_reason: StopReason,
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

impl SaturationReport {
    /// This run followed by `later` on the same e-graph: iterations, refusals and applications
    /// add up, the e-graph's size is the later's, and the stop reason is the first that is not
    /// saturation (a limit hit in either run is reported).
    pub fn then(mut self, later: SaturationReport) -> SaturationReport {
        self.iterations += later.iterations;
        self.refused_instantiations += later.refused_instantiations;
        for (rule, n) in later.applied {
            *self.applied.entry(rule).or_default() += n;
        }
        (self.enodes, self.eclasses) = (later.enodes, later.eclasses);
        if self.stop_reason == StopReason::Saturated {
            self.stop_reason = later.stop_reason;
        }
        self
    }
}

/// Runs `rules` on the e-graph until saturation or a limit.
pub fn saturate(
    egraph: SlimGraph,
    rules: &[Rule],
    limits: &Limits,
) -> Result<(SlimGraph, SaturationReport), RuleError> {
    let refused = Arc::new(AtomicUsize::new(0));
    let rewrites = rules
        .iter()
        .map(|r| {
            rewrite(r, refused.clone()).map_err(|message| RuleError::Invalid {
                origin: r.origin.clone(),
                rule: r.name.clone(),
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runner: Runner<TensorLang, SlimAnalysis> = Runner::new(SlimAnalysis::default())
        .with_egraph(egraph)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .with_scheduler(egg::SimpleScheduler)
        .run(&rewrites);
    let stop_reason = StopReason::of(runner.stop_reason.as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        stop_reason: StopReason,
        iterations: usize,
        applied: &[(&str, usize)],
    ) -> SaturationReport {
        SaturationReport {
            stop_reason,
            iterations,
            enodes: iterations * 10,
            eclasses: iterations,
            refused_instantiations: 0,
            applied: applied.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn a_second_run_adds_up_and_a_limit_in_either_is_reported() {
        let first = run(StopReason::Saturated, 3, &[("a", 2)]);
        let later = run(StopReason::IterationLimit(4), 4, &[("a", 1), ("b", 5)]);
        let both = first.clone().then(later);
        assert_eq!(both.stop_reason, StopReason::IterationLimit(4));
        assert_eq!((both.iterations, both.enodes), (7, 40));
        assert_eq!(both.applied["a"], 3);
        assert_eq!(both.applied["b"], 5);
        let limited = run(StopReason::NodeLimit(9), 1, &[]);
        let saturated = run(StopReason::Saturated, 2, &[]);
        assert_eq!(
            limited.then(saturated).stop_reason,
            StopReason::NodeLimit(9)
        );
    }
}
