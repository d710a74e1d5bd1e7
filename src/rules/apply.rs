//! Turning a parsed [`Rule`] into an egg rewrite: evaluate its clauses, build its right-hand side,
//! and union it with the match only when it is well typed and has the matched tensor's type.

use crate::egraph::analysis::{infer, SlimAnalysis, SlimGraph};
use crate::egraph::lang::TensorLang;
use crate::rules::guards::Arg;
use crate::rules::parser::{ArgSpec, Rule};
use egg::{Applier, ENodeOrVar, Id, Language, PatternAst, Rewrite, Subst, Symbol, Var};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Applies a rule's clauses and right-hand side.
pub struct RuleApplier {
    rule: Rule,
    /// Instantiations refused because the right-hand side did not type as the match did: a
    /// wrong rule, counted so that callers can report it.
    pub refused: Arc<AtomicUsize>,
}

/// Builds the egg rewrite of a rule; `refused` counts ill-typed instantiations.
pub fn rewrite(
    rule: &Rule,
    refused: Arc<AtomicUsize>,
) -> Result<Rewrite<TensorLang, SlimAnalysis>, String> {
    let applier = RuleApplier {
        rule: rule.clone(),
        refused,
    };
    Rewrite::new(rule.name.as_str(), rule.lhs.clone(), applier)
}

impl RuleApplier {
    /// Every binding of the clause variables, extending the match's substitution.
    fn bindings(&self, egraph: &mut SlimGraph, subst: &Subst) -> Vec<Subst> {
        let mut substs = vec![subst.clone()];
        for clause in &self.rule.clauses {
            let mut next = vec![];
            for s in substs {
                let args: Vec<Arg> = clause
                    .args
                    .iter()
                    .map(|a| match a {
                        ArgSpec::Var(v) => Arg::Class(egraph.find(s[*v])),
                        ArgSpec::Int(i) => Arg::Int(*i),
                    })
                    .collect();
                for alternative in (clause.guard.run)(egraph, &args) {
                    let mut extended = s.clone();
                    for (var, id) in clause.binds.iter().zip(alternative) {
                        extended.insert(*var, id);
                    }
                    next.push(extended);
                }
            }
            substs = next;
        }
        substs
    }
}

/// Adds the pattern's nodes bottom-up; `None` if a node would be ill typed.
fn instantiate(egraph: &mut SlimGraph, ast: &PatternAst<TensorLang>, subst: &Subst) -> Option<Id> {
    let mut ids: Vec<Id> = Vec::with_capacity(ast.as_ref().len());
    for node in ast.as_ref() {
        let id = match node {
            ENodeOrVar::Var(v) => subst[*v],
            ENodeOrVar::ENode(n) => {
                let n = n.clone().map_children(|c| ids[usize::from(c)]);
                if egraph.lookup(n.clone()).is_none() {
                    infer(egraph, &n).ok()?;
                }
                egraph.add(n)
            }
        };
        ids.push(id);
    }
    ids.last().copied()
}

fn same_type(egraph: &SlimGraph, a: Id, b: Id) -> bool {
    match (&egraph[a].data.fact, &egraph[b].data.fact) {
        (Some(x), Some(y)) => x.datum_type == y.datum_type && x.shape == y.shape,
        (None, None) => true,
        _ => false,
    }
}

impl Applier<TensorLang, SlimAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut SlimGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<TensorLang>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let mut changed = vec![];
        for binding in self.bindings(egraph, subst) {
            let Some(id) = instantiate(egraph, &self.rule.rhs, &binding) else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !same_type(egraph, id, eclass) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if egraph.union_trusted(eclass, id, rule_name) {
                changed.push(id);
            }
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        self.rule.lhs.vars()
    }
}
