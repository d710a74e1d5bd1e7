//! Every default rule is checked on random instances ([`model_slim::check`]): random shapes,
//! random data with random zero slices (whole channels, and partial ones that must stay). After
//! saturation, *every* node of every e-class is extracted in turn, rebuilt as a tract model and
//! run: each must compute what the original graph computes. Every rule must have fired
//! somewhere, so no rule goes unchecked; a deliberately wrong rule is caught.

use egg::{Id, Language};
use model_slim::testing::check::{check_alternatives, check_rules};
use model_slim::testing::extract;
use model_slim::testing::saturate;
use model_slim::testing::{raise, Interface};
use model_slim::testing::{Key, TensorLang};
use model_slim::testing::{SlimAnalysis, SlimGraph, Tables};
use model_slim::Limits;
use model_slim::Nominal;
use model_slim::{default_rules, parse};
use model_slim::{random_inputs, run};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use tract_core::internal::*;

#[test]
fn every_rule_is_sound_on_random_models() {
    let rules = default_rules().unwrap();
    let report = check_rules(&rules, 160, 0).unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.refused, 0, "ill-typed rule output");
    let missing: Vec<_> = rules
        .iter()
        .map(|r| r.name.as_str())
        .filter(|r| !report.fired.contains_key(*r) && !["keep-keep", "keep-everything"].contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "rules never exercised by the random models: {missing:?}"
    );
    assert!(
        report.alternatives > 100,
        "only {} alternatives checked",
        report.alternatives
    );
    assert!(
        report.unextractable < report.alternatives / 10,
        "{} alternatives unextractable, {} compared: rules add terms no extraction can use",
        report.unextractable,
        report.alternatives
    );
}

#[test]
fn a_wrong_rule_is_caught() {
    // Dropping an element-wise function is wrong for every function but the identity.
    let wrong = parse(
        "wrong.rules",
        "## Wrong on purpose.\nrule drop-map\n  match (map ?f ?x)\n  => ?x\n",
    )
    .unwrap();
    let mut rules = default_rules().unwrap();
    rules.extend(wrong);
    let report = check_rules(&rules, 12, 0).unwrap();
    assert!(report.fired.contains_key("drop-map"));
    assert!(!report.failures.is_empty(), "the wrong rule went unnoticed");
}

/// Rules that the FFN rules never produce the left side of, checked on direct random terms.
#[test]
fn keep_composition_rules_are_sound() {
    let rules = default_rules().unwrap();
    let mut applied = BTreeMap::new();
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (rows, cols) = (rng.gen_range(1..4), rng.gen_range(2..9));
        let fact = f32::fact([rows, cols]);
        let mut tables = Tables::default();
        tables.inputs.push(fact.clone());
        let mut egraph = SlimGraph::new(SlimAnalysis::new(tables));
        let x = egraph.add(TensorLang::Key(Key::Input(0)));
        let axis = egraph.add(TensorLang::Num(1));
        let mut subset = |egraph: &mut SlimGraph, n: usize| -> (Id, usize) {
            let set: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.6)).collect();
            let set = if set.is_empty() { vec![0] } else { set };
            let len = set.len();
            let key = egraph.analysis.tables.intern_set(set);
            (egraph.add(TensorLang::Key(key)), len)
        };
        let (inner, inner_len) = subset(&mut egraph, cols);
        let (outer, _) = subset(&mut egraph, inner_len);
        let kept = egraph.add(TensorLang::Keep([axis, inner, x]));
        let twice = egraph.add(TensorLang::Keep([axis, outer, kept]));
        let all = egraph.analysis.tables.intern_set((0..cols).collect());
        let all = egraph.add(TensorLang::Key(all));
        let everything = egraph.add(TensorLang::Keep([axis, all, x]));
        let roots = vec![twice, everything];
        egraph.rebuild();

        let input_names = vec!["x".to_string()];
        let output_names = vec!["twice".to_string(), "everything".to_string()];
        let names = HashMap::new();
        let symbols = SymbolScope::default();
        let interface = Interface {
            input_names: &input_names,
            output_names: &output_names,
            outputs: &roots,
            restricted_inputs: &[],
            names: &names,
            symbols: &symbols,
        };
        let reference = raise(
            &egraph,
            &extract(&egraph, &roots, &Nominal::default()),
            &interface,
        )
        .unwrap();
        let inputs = random_inputs(&reference, seed, &SymbolValues::default()).unwrap();
        let expected = run(&reference, inputs.clone()).unwrap();

        let (egraph, report) = saturate(egraph, &rules, &Limits::default()).unwrap();
        for (rule, n) in report.applied {
            *applied.entry(rule).or_insert(0) += n;
        }
        let roots: Vec<Id> = roots.iter().map(|r| egraph.find(*r)).collect();
        let interface = Interface {
            outputs: &roots,
            restricted_inputs: &[],
            ..interface
        };
        let checked = check_alternatives(
            &egraph,
            &interface,
            &inputs,
            &expected,
            &format!("seed {seed}"),
        )
        .unwrap();
        assert!(checked.failures.is_empty(), "{:#?}", checked.failures);
        assert!(checked.compared >= 1, "seed {seed}: nothing rewritten");
        // `keep(everything, x)` and `x` share a class: the keep cannot be computed from itself.
        assert!(
            checked.unextractable >= 1,
            "seed {seed}: the cyclic alternative went uncounted"
        );
        assert!(
            egraph[roots[1]]
                .nodes
                .iter()
                .any(|n| n.children().is_empty()),
            "keep of everything is the input itself"
        );
    }
    assert!(
        applied.contains_key("keep-keep") && applied.contains_key("keep-everything"),
        "{applied:?}"
    );
}
