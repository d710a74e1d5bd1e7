//! Auto-slim: achieved sparsity equals the request (per layer, globally, rounded to a multiple),
//! saved plans re-apply identically and bad ones are clear errors, bias compensation improves
//! fidelity, and activation-aware scores see through large weights that never fire.

mod common;

use common::{dense_fixtures, graph_summary, Fixture};
use model_slim::{auto_slim, AutoOptions, AutoSlimmed, AutoStage, GlobalCost, Repair, Scoring};
use model_slim::{choose, magnitude_scores, KvLayout, Plan, Targets};
use model_slim::{groups, Kind};
use model_slim::{load_npz, Calibration};
use model_slim::{max_abs_diff, run};
use model_slim::{SlimError, Slimmer};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{add, max};

fn targets(ffn: f64, heads: f64) -> Targets {
    Targets::per_layer(ffn, heads)
}

/// The targets for a fixture: no heads asked of a model without attention (that is an error).
fn targets_for(fixture: &Fixture, ffn: f64, heads: f64) -> Targets {
    let attention = fixture.layers.iter().any(|l| l.heads > 0);
    targets(ffn, if attention { heads } else { 0.0 })
}

fn options(targets: Targets, calibration: Option<Calibration>) -> AutoOptions {
    AutoOptions {
        calibration,
        random_samples: 2,
        ..AutoOptions::new(targets)
    }
}

/// The dense fixture of that name.
fn dense_fixture(name: &str) -> Fixture {
    dense_fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
}

fn calibration_for(fixture: &Fixture, model: &TypedModel) -> Calibration {
    calibration_of(fixture, model).expect("the fixture family has calibration data")
}

/// The fixture family's calibration data, where it has some.
fn calibration_of(fixture: &Fixture, model: &TypedModel) -> Option<Calibration> {
    let name = fixture.name.split("_dense").next().unwrap();
    let path = common::fixtures_dir().join(format!("{name}_calibration.npz"));
    path.exists().then(|| load_npz(&path, model).unwrap())
}

fn slim(model: &TypedModel, options: &AutoOptions) -> AutoSlimmed {
    let result = auto_slim(model, &Slimmer::new().unwrap(), options).unwrap();
    let exact = result.report.slim.verification.as_ref().unwrap();
    assert!(
        exact.passed,
        "slimming changed the pruned model: {:?}",
        exact.outputs
    );
    result
}

/// (kind, units, kept) per group, as planned and as the slimmed model's report measures.
fn kept(result: &AutoSlimmed) -> Vec<(Kind, usize, usize)> {
    let planned: Vec<(Kind, usize, usize)> = result
        .report
        .groups
        .iter()
        .map(|g| (g.kind, g.units, g.kept))
        .collect();
    let slim = &result.report.slim;
    let mut measured: Vec<(Kind, usize, usize)> = slim
        .attention_layers
        .iter()
        .map(|l| (Kind::Heads, l.heads_before, l.heads_after))
        .chain(
            slim.ffn_layers
                .iter()
                .map(|l| (Kind::Ffn, l.channels_before, l.channels_after)),
        )
        .collect();
    let mut sorted = planned.clone();
    sorted.sort_by_key(|k| format!("{k:?}"));
    measured.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        sorted, measured,
        "the slimmed model does not have the planned widths"
    );
    planned
}

#[test]
fn per_layer_sparsity_is_achieved_on_every_dense_fixture() {
    for fixture in dense_fixtures() {
        let model = fixture.load();
        let result = slim(&model, &options(targets_for(&fixture, 0.5, 0.25), None));
        for (kind, units, kept) in kept(&result) {
            let expected = match kind {
                Kind::Ffn => units - (0.5 * units as f64).round() as usize,
                Kind::Heads => units - (0.25 * units as f64).round() as usize,
            };
            assert_eq!(kept, expected, "{}: {kind:?}", fixture.name);
        }
        assert_eq!(result.report.scoring, Scoring::Magnitude);
        assert!(
            !result.report.warnings.is_empty(),
            "no warning without calibration data"
        );
    }
}

/// A global budget of 30% of the FFN channels and 50% of the heads was spent exactly, each
/// layer keeping its floor of 20%.
fn assert_global_budget(fixture: &Fixture, groups: &[(Kind, usize, usize)]) {
    for kind in [Kind::Ffn, Kind::Heads] {
        let of_kind: Vec<_> = groups.iter().filter(|g| g.0 == kind).collect();
        let total: usize = of_kind.iter().map(|g| g.1).sum();
        let removed: usize = of_kind.iter().map(|g| g.1 - g.2).sum();
        let fraction = if kind == Kind::Ffn { 0.3 } else { 0.5 };
        assert_eq!(
            removed,
            (fraction * total as f64).round() as usize,
            "{}: {kind:?}",
            fixture.name
        );
        for g in &of_kind {
            assert!(
                g.2 as f64 >= (0.2 * g.1 as f64).ceil(),
                "{}: floor broken: {g:?}",
                fixture.name
            );
        }
    }
}

#[test]
fn global_sparsity_and_multiples_are_achieved() {
    for fixture in dense_fixtures() {
        let model = fixture.load();
        let global = Targets {
            global: true,
            floor: 0.2,
            ..targets_for(&fixture, 0.3, 0.5)
        };
        let result = slim(&model, &options(global, None));
        assert_global_budget(&fixture, &kept(&result));

        // With calibration data the budget is spent by removal cost, under the same rules.
        if let Some(calibration) = calibration_of(&fixture, &model) {
            let result = slim(&model, &options(global, Some(calibration)));
            assert_eq!(result.report.scoring, Scoring::RemovalCost);
            assert_global_budget(&fixture, &kept(&result));
        }

        let rounded = Targets {
            multiple_of: 8,
            ..targets(0.3, 0.0)
        };
        let result = slim(&model, &options(rounded, None));
        for (kind, units, kept) in kept(&result) {
            if kind == Kind::Ffn {
                // units − round(0.3 · units) channels, rounded to the nearest multiple of 8.
                let wanted = units - (0.3 * units as f64).round() as usize;
                let expected = ((wanted + 4) / 8 * 8).clamp(8, units);
                assert_eq!(kept, expected, "{}: {units} channels", fixture.name);
            }
        }
    }
}

#[test]
fn a_saved_plan_applies_again_identically() {
    let fixture = dense_fixture("bert_dense_dynamo");
    let model = fixture.load();
    let calibration = calibration_for(&fixture, &model);
    let first = slim(
        &model,
        &options(targets(0.5, 0.5), Some(calibration.clone())),
    );
    let saved: Plan = serde_json::from_str(&serde_json::to_string(&first.plan).unwrap()).unwrap();
    let mut again = options(targets(0.0, 0.0), Some(calibration.clone()));
    again.plan = Some(saved);
    let second = slim(&model, &again);
    assert_eq!(second.report.scoring, Scoring::Plan);
    assert_eq!(
        graph_summary(&first.slimmed),
        graph_summary(&second.slimmed)
    );
    assert_same_outputs(&first.slimmed, &second.slimmed, &calibration.samples[..4]);
}

/// The outputs of two models on some samples are identical.
fn assert_same_outputs(a: &TypedModel, b: &TypedModel, samples: &[TVec<TValue>]) {
    for sample in samples {
        let (x, y) = (
            run(a, sample.clone()).unwrap(),
            run(b, sample.clone()).unwrap(),
        );
        for (x, y) in x.iter().zip(y.iter()) {
            assert_eq!(max_abs_diff(x, y).unwrap(), 0.0);
        }
    }
}

/// Units removed per kind by a plan.
fn removed_per_kind(plan: &Plan) -> [usize; 2] {
    let count = |kind| {
        plan.groups
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.removed.len())
            .sum()
    };
    [count(Kind::Ffn), count(Kind::Heads)]
}

#[test]
fn a_global_budget_weighed_by_the_outputs_measures_each_group_and_spends_the_budget() {
    let fixture = dense_fixture("bert_dense_torchscript");
    let model = fixture.load();
    let calibration = calibration_for(&fixture, &model);
    let global = |global_cost| Targets {
        global: true,
        global_cost,
        ..targets(0.5, 0.5)
    };
    let by_reconstruction = slim(
        &model,
        &options(
            global(GlobalCost::Reconstruction),
            Some(calibration.clone()),
        ),
    );
    let measured = |cost, statistics_memory| AutoOptions {
        statistics_memory,
        ..options(global(cost), Some(calibration.clone()))
    };
    for cost in [GlobalCost::Outputs, GlobalCost::Embeddings] {
        let by_outputs = slim(&model, &measured(cost, None));
        let measures = |result: &AutoSlimmed| {
            result
                .report
                .stage_times
                .iter()
                .any(|t| t.stage == AutoStage::Measure)
        };
        assert!(measures(&by_outputs));
        assert!(!measures(&by_reconstruction));
        // The same budget, spent elsewhere or not.
        assert_eq!(
            removed_per_kind(&by_outputs.plan),
            removed_per_kind(&by_reconstruction.plan)
        );
        // Measured group by group, in passes as at once.
        let streamed = slim(&model, &measured(cost, Some(1)));
        assert_eq!(by_outputs.plan, streamed.plan);
    }
    // A measured cost without a global budget, or without samples, would weigh nothing.
    let refused = |options: &AutoOptions| {
        auto_slim(&model, &Slimmer::new().unwrap(), options)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    let per_layer = Targets {
        global_cost: GlobalCost::Outputs,
        ..targets(0.5, 0.5)
    };
    let without_global = options(per_layer, Some(calibration.clone()));
    assert!(refused(&without_global).contains("set `global` too"));
    let without_samples = options(global(GlobalCost::Outputs), None);
    assert!(refused(&without_samples).contains("needs calibration samples"));
    // Embeddings need a mask to pool with: the MLP fixture has none.
    let mlp = dense_fixture("llama_mlp_dense_torchscript");
    let mlp_model = mlp.load();
    let no_mask = AutoOptions {
        targets: Targets {
            global: true,
            global_cost: GlobalCost::Embeddings,
            ..targets(0.5, 0.0)
        },
        ..options(targets(0.5, 0.0), Some(calibration_for(&mlp, &mlp_model)))
    };
    let error = auto_slim(&mlp_model, &Slimmer::new().unwrap(), &no_mask)
        .err()
        .expect("no output pools without a mask");
    assert!(
        format!("{error:#}").contains("attention-mask input"),
        "{error:#}"
    );
}

#[test]
fn statistics_in_several_passes_give_the_same_model() {
    let fixture = dense_fixture("bert_dense_torchscript");
    let model = fixture.load();
    let calibration = calibration_for(&fixture, &model);
    let uniform = targets(0.5, 0.5);
    let global = Targets {
        global: true,
        ..targets(0.5, 0.5)
    };
    for targets in [uniform, global] {
        let at_once = slim(&model, &options(targets, Some(calibration.clone())));
        // One byte: every group's statistics in a pass of their own.
        let streamed_options = AutoOptions {
            statistics_memory: Some(1),
            ..options(targets, Some(calibration.clone()))
        };
        let streamed = slim(&model, &streamed_options);
        assert_eq!(at_once.report.calibration_passes, 1);
        let groups = streamed.report.groups.len();
        let passes = if targets.global { 2 * groups } else { groups };
        assert_eq!(streamed.report.calibration_passes, passes);
        assert_eq!(at_once.plan, streamed.plan);
        assert_eq!(
            at_once.report.fidelity[0].cosine,
            streamed.report.fidelity[0].cosine
        );
        assert_same_outputs(&at_once.pruned, &streamed.pruned, &calibration.samples[..4]);
        // A saved plan's repairs in passes too.
        let replay = AutoOptions {
            plan: Some(at_once.plan.clone()),
            ..streamed_options.clone()
        };
        let replayed = slim(
            &model,
            &AutoOptions {
                targets: Targets::per_layer(0.0, 0.0),
                ..replay
            },
        );
        assert_eq!(replayed.report.calibration_passes, groups);
        assert_same_outputs(&at_once.pruned, &replayed.pruned, &calibration.samples[..4]);
    }
}

/// The removed query heads of each KV group of every heads plan entry.
fn removed_per_kv_group(result: &AutoSlimmed, per_kv: usize) -> Vec<Vec<usize>> {
    result
        .plan
        .groups
        .iter()
        .filter(|g| g.kind == Kind::Heads)
        .map(|g| {
            (0..g.units / per_kv)
                .map(|kv| g.removed.iter().filter(|h| **h / per_kv == kv).count())
                .collect()
        })
        .collect()
}

#[test]
fn gqa_pruning_keeps_equal_query_heads_per_group_and_the_plan_round_trips() {
    // Qwen2's fixture: 6 query heads sharing 2 KV heads (3 per group).
    let fixture = dense_fixture("qwen2_dense_torchscript");
    let model = fixture.load();
    // Scores whose two lowest heads share a KV group: chosen freely, both go; kept equal, the
    // second comes from the other group.
    let found = groups(&model).unwrap();
    let scores: Vec<Vec<f32>> = found
        .iter()
        .map(|g| match g.kind {
            Kind::Heads => vec![0.0, 1.0, 5.0, 5.0, 4.0, 5.0],
            Kind::Ffn => vec![1.0; g.units],
        })
        .collect();
    for (layout, expected) in [(KvLayout::Any, vec![0, 1]), (KvLayout::Equal, vec![0, 4])] {
        let layout_targets = Targets {
            kv_layout: layout,
            ..targets(0.0, 1.0 / 3.0)
        };
        let plan = choose(&model, &found, &scores, &layout_targets).unwrap();
        for entry in plan.groups.iter().filter(|g| g.kind == Kind::Heads) {
            assert_eq!(entry.removed, expected, "{layout}");
        }
    }

    let calibration = calibration_for(&fixture, &model);
    for calibration in [None, Some(calibration)] {
        let equal = slim(
            &model,
            &options(targets(0.0, 1.0 / 3.0), calibration.clone()),
        );
        for per_group in removed_per_kv_group(&equal, 3) {
            assert_eq!(per_group, vec![1, 1], "{:?}", equal.plan);
        }
        for layer in &equal.report.slim.attention_layers {
            assert_eq!((layer.heads_after, layer.kv_heads_after), (4, 2));
        }

        let whole_targets = Targets {
            kv_layout: KvLayout::Whole,
            ..targets(0.0, 0.5)
        };
        let whole = slim(&model, &options(whole_targets, calibration.clone()));
        for per_group in removed_per_kv_group(&whole, 3) {
            let mut sorted = per_group.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 3], "{:?}", whole.plan);
        }
        for layer in &whole.report.slim.attention_layers {
            assert_eq!((layer.heads_after, layer.kv_heads_after), (3, 1));
        }

        // Two thirds of the heads keep one per group; rounded to a multiple of two, two.
        let rounded = Targets {
            heads_multiple_of: 2,
            ..targets(0.0, 2.0 / 3.0)
        };
        for (layout_targets, kept) in [(targets(0.0, 2.0 / 3.0), 2), (rounded, 4)] {
            let result = slim(&model, &options(layout_targets, calibration.clone()));
            for layer in &result.report.slim.attention_layers {
                assert_eq!((layer.heads_after, layer.kv_heads_after), (kept, 2));
            }
        }

        let saved: Plan =
            serde_json::from_str(&serde_json::to_string(&equal.plan).unwrap()).unwrap();
        assert_eq!(saved, equal.plan);
        let mut again = options(targets(0.0, 0.0), calibration.clone());
        again.plan = Some(saved);
        let replayed = slim(&model, &again);
        assert_eq!(replayed.plan, equal.plan);
        assert_eq!(
            graph_summary(&replayed.slimmed),
            graph_summary(&equal.slimmed)
        );
    }
}

#[test]
fn a_plan_that_does_not_fit_the_model_is_a_clear_error() {
    let fixture = dense_fixture("gpt2_dense_torchscript");
    let model = fixture.load();
    let first = slim(&model, &options(targets(0.5, 0.5), None));
    type Breakage = fn(&mut Plan);
    let cases: [(&str, Breakage); 3] = [
        ("no ffn layer 7", |p| p.groups[1].layer = 7),
        ("out of range", |p| p.groups[1].removed.push(999)),
        ("not `renamed`", |p| p.groups[0].name = "renamed".into()),
    ];
    for (needle, break_it) in cases {
        let mut plan = first.plan.clone();
        break_it(&mut plan);
        let mut bad = options(targets(0.0, 0.0), None);
        bad.plan = Some(plan);
        bad.plan_origin = "plan.json".into();
        let error = auto_slim(&model, &Slimmer::new().unwrap(), &bad)
            .err()
            .expect("a bad plan is refused");
        assert!(matches!(error, SlimError::Plan { .. }), "{error}");
        assert!(error.to_string().contains(needle), "{error}");
        assert!(
            error.to_string().starts_with("plan.json: bad plan"),
            "{error}"
        );
    }
}

#[test]
fn a_sparsity_of_units_the_model_has_not_is_an_error() {
    // The gated MLP stack has FFNs but no attention: asking for heads must not silently do
    // nothing.
    let fixture = dense_fixture("llama_mlp_dense_torchscript");
    let model = fixture.load();
    let result = auto_slim(
        &model,
        &Slimmer::new().unwrap(),
        &options(targets(0.5, 0.5), None),
    );
    let error = result
        .err()
        .expect("heads asked of a model without attention")
        .to_string();
    assert!(
        error.contains("--mha-sparsity") && error.contains("no attention group"),
        "{error}"
    );
    // FFN channels alone are fine.
    slim(&model, &options(targets(0.5, 0.0), None));

    // A grouped-query layout asked of multi-head attention (BERT) would change nothing.
    let bert = dense_fixture("bert_dense_torchscript").load();
    let whole = Targets {
        kv_layout: KvLayout::Whole,
        ..targets(0.0, 0.5)
    };
    let error = auto_slim(&bert, &Slimmer::new().unwrap(), &options(whole, None))
        .err()
        .expect("a KV layout asked of a model without grouped-query attention")
        .to_string();
    assert!(
        error.contains("--kv-layout whole") && error.contains("no grouped-query attention"),
        "{error}"
    );
}

#[test]
fn each_repair_lowers_the_calibration_error_more() {
    for name in [
        "bert_dense_dynamo",
        "gpt2_dense_torchscript",
        "llama_mlp_dense_torchscript",
    ] {
        let fixture = dense_fixtures()
            .into_iter()
            .find(|f| f.name == name)
            .unwrap();
        let model = fixture.load();
        let calibration = calibration_for(&fixture, &model);
        let run = |repair: Repair| {
            let mut o = options(targets_for(&fixture, 0.5, 0.5), Some(calibration.clone()));
            o.repair = repair;
            slim(&model, &o)
        };
        let [none, compensated, refit] =
            [Repair::None, Repair::Compensation, Repair::LeastSquares].map(run);
        assert_eq!(refit.report.repair, Repair::LeastSquares);
        assert!(
            refit.report.groups.iter().any(|g| g.ridge.is_some()),
            "{name}: nothing refit"
        );
        assert_eq!(
            none.plan, compensated.plan,
            "repairs must not change the choice"
        );
        assert_eq!(none.plan, refit.plan, "repairs must not change the choice");
        // Fidelity is measured on the calibration data here (no held-out set is given).
        for ((n, c), r) in none
            .report
            .fidelity
            .iter()
            .zip(&compensated.report.fidelity)
            .zip(&refit.report.fidelity)
        {
            println!(
                "{name} {}: relative L2 {:.4} none, {:.4} compensation, {:.4} least squares",
                n.name, n.relative_l2, c.relative_l2, r.relative_l2
            );
            assert!(
                c.relative_l2 < n.relative_l2,
                "{name}: compensation did not help"
            );
            assert!(
                r.relative_l2 < c.relative_l2,
                "{name}: the least-squares refit is no better than compensation"
            );
        }
    }
}

/// An FFN (ReLU) whose first `dead` channels have the largest weights but a bias so negative
/// that they never fire.
fn ffn_with_dead_channels(dead: usize) -> TypedModel {
    let (h, f) = (16, 32);
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, 8, h])).unwrap();
    let w1 = tract_ndarray::Array2::from_shape_fn((h, f), |(i, c)| {
        let v = ((i * 7 + c * 3) % 5) as f32 / 5.0 - 0.4;
        if c < dead {
            10.0 * v.signum()
        } else {
            v
        }
    });
    let b1 = tract_ndarray::Array3::from_shape_fn(
        (1, 1, f),
        |(_, _, c)| if c < dead { -1000f32 } else { 0.1 },
    );
    let w2 = tract_ndarray::Array2::from_shape_fn((f, h), |(c, o)| {
        let v = ((c * 5 + o) % 7) as f32 / 7.0 - 0.5;
        if c < dead {
            10.0 * v
        } else {
            v
        }
    });
    let einsum = |e: &str| EinSum::new(e.parse().unwrap(), f32::datum_type());
    let w1 = m.add_const("up.weight", w1.into_tensor()).unwrap();
    let b1 = m.add_const("up.bias", b1.into_tensor()).unwrap();
    let up = m.wire_node("up", einsum("amk,kn->amn"), &[x, w1]).unwrap()[0];
    let up = m.wire_node("up.bias_add", add(), &[up, b1]).unwrap()[0];
    let zero = m.add_const("zero", tensor3(&[[[0f32]]])).unwrap();
    let act = m.wire_node("relu", max(), &[up, zero]).unwrap()[0];
    let w2 = m.add_const("down.weight", w2.into_tensor()).unwrap();
    let y = m
        .wire_node("down", einsum("amn,np->amp"), &[act, w2])
        .unwrap()[0];
    let b2 = m
        .add_const("down.bias", tensor3(&[[[0.5f32; 16]]]))
        .unwrap();
    let y = m.wire_node("down.bias_add", add(), &[y, b2]).unwrap()[0];
    m.select_output_outlets(&[y]).unwrap();
    m.into_decluttered().unwrap()
}

#[test]
fn activation_scores_remove_large_channels_that_never_fire() {
    let dead = 4;
    let model = ffn_with_dead_channels(dead);
    let found = groups(&model).unwrap();
    assert_eq!(found.len(), 1);
    let sparsity = Targets {
        ffn: dead as f64 / 32.0,
        ..targets(0.0, 0.0)
    };

    let magnitude = vec![magnitude_scores(&model, &found[0]).unwrap()];
    let by_magnitude = choose(&model, &found, &magnitude, &sparsity).unwrap();
    assert!(
        by_magnitude.groups[0].removed.iter().all(|&c| c >= dead),
        "magnitude keeps the large dead channels: {:?}",
        by_magnitude.groups[0].removed
    );

    let samples = (0..8)
        .map(|seed| model_slim::random_inputs(&model, seed, &SymbolValues::default()).unwrap())
        .collect();
    let result = slim(
        &model,
        &options(sparsity, Some(Calibration::new(&model, samples))),
    );
    assert_eq!(result.plan.groups[0].removed, (0..dead).collect::<Vec<_>>());
    // The model has no token mask: the report says every position counted.
    assert!(
        result
            .report
            .warnings
            .iter()
            .any(|w| w.contains("no model input is a token mask")),
        "{:?}",
        result.report.warnings
    );
    // Dead channels contribute nothing: removing them is exact.
    for f in &result.report.fidelity {
        assert!(f.relative_l2 < 1e-6, "{f:?}");
    }
}
