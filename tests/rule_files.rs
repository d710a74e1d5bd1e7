//! Each rules file, case by case, on the committed real exports (in the manner of Cranelift's
//! filetests): positive cases name rules that must fire on a fixture, negative cases rules that
//! must not — near misses where the fixture has zeros, but not the ones the rule needs. Every
//! default rules file has both kinds, and every default rule is named in a positive case or is
//! the mirror image of one (checked on random instances by `rule_soundness.rs`).

mod common;

use common::{fixtures_dir, manifest};
use model_slim::{default_rules, import_onnx, ImportOptions, Slimmer};
use std::collections::{BTreeMap, BTreeSet};
use tract_core::internal::TypedModel;

/// On `fixture`, every rule of `fires` fires and none of `quiet` does, because `why`.
struct Case {
    fixture: &'static str,
    fires: &'static [&'static str],
    quiet: &'static [&'static str],
    why: &'static str,
}

const fn fires(fixture: &'static str, rules: &'static [&'static str], why: &'static str) -> Case {
    Case {
        fixture,
        fires: rules,
        quiet: &[],
        why,
    }
}

const fn quiet(fixture: &'static str, rules: &'static [&'static str], why: &'static str) -> Case {
    Case {
        fixture,
        fires: &[],
        quiet: rules,
        why,
    }
}

/// The cases of every default rules file.
const CASES: &[(&str, &[Case])] = &[
    ("ffn.rules", &[
        fires("bert_ffn_torchscript", &["einsum-drop-zero-contraction"], "zeroed FFN input channels of the second linear"),
        fires("llama_mlp_ffn_torchscript", &["einsum-drop-zero-contraction"], "zeroed down-projection channels behind the gate product"),
        quiet("bert_dense_torchscript", &["einsum-drop-zero-contraction"], "random weights: no contraction has an all-zero slice"),
        quiet("qwen2_dense_torchscript", &["einsum-drop-zero-contraction"], "random weights, grouped-query attention"),
    ]),
    ("keep.rules", &[
        fires("bert_heads_torchscript", &["keep-const", "keep-through-map", "keep-through-bin", "keep-through-bin-broadcast-right", "keep-through-where", "keep-through-einsum-both", "keep-through-einsum-right", "keep-through-along"], "a head restriction crosses sdpa's NaN guard, the softmax and both attention products"),
        fires("llama_heads_torchscript", &["keep-through-concat", "keep-through-axis-op"], "RoPE's rotate_half concatenates the halves of each head"),
        fires("qwen2_kvgroup_torchscript", &["keep-through-broadcast-to", "reshape-as-axis-op"], "a whole KV group goes: its broadcast in repeat_kv shrinks"),
        fires("qwen2_equal_torchscript", &["keep-through-einsum-left", "keep-everything"], "equal counts per KV group keep every group"),
        fires("bert_constant_torchscript", &["keep-keep"], "a folded constant channel is restricted twice"),
        fires("qwen2_heads_torchscript", &["axis-ops-cancel"], "tract's head split meets its inverse once the group axes merge"),
        fires("neck_pruned_dynamo", &["keep-through-concat-axis"], "a 3×3 conv fusing two branches concatenated along the channels reads some of each"),
        fires("neck_branch_torchscript", &["keep-through-concat-left"], "the fusing conv reads none of the second branch"),
        fires("detector_pruned_dynamo", &["keep-through-along"], "a channel restriction crosses a detector neck's nearest upsampling"),
        fires("resnet_coupled_torchscript", &["keep-through-pool-channels"], "channels zero in every producer of a residual stream reach the stem through its max pooling"),
        quiet("resnet_onebranch_dynamo", &["keep-through-pool-channels"], "the identity path carries the channels one branch zeroes: nothing is restricted"),
        quiet("bert_ffn_torchscript", &["keep-through-along", "keep-through-where", "keep-through-einsum-both"], "FFN zeros only: no restriction reaches attention"),
        quiet("mpnet_mixed_torchscript", &["keep-through-where", "keep-through-concat"], "hand-written attention: no NaN guard, no RoPE"),
        quiet("gpt2_dense_torchscript", &["keep-const", "keep-through-map"], "nothing zero: nothing restricted"),
    ]),
    ("heads.rules", &[
        fires("bert_heads_torchscript", &["keep-through-head-reshape"], "zeroed output-projection slices of whole heads"),
        fires("gpt2_heads_torchscript", &["keep-through-head-reshape"], "the same through the fused c_attn"),
        quiet("bert_ffn_torchscript", &["keep-through-head-reshape"], "FFN zeros only"),
        quiet("llama_ffn_torchscript", &["keep-through-head-reshape"], "FFN zeros only, behind RoPE"),
    ]),
    ("blocks.rules", &[
        fires("bert_ffn_torchscript", &["residual-absorbs-zero-block-left"], "an edge layer loses every FFN channel"),
        fires("gpt2_ffn_torchscript", &["residual-absorbs-zero-block-right"], "GPT-2 adds the residual on the other side"),
        fires("llama_heads_torchscript", &["add-zero-right"], "a bias-free layer losing every head adds an all-zero tensor"),
        quiet("bert_constant_torchscript", &["residual-absorbs-zero-block-left", "add-zero-right"], "constant units fold into a bias: no block becomes zero"),
        quiet("gpt2_heads_torchscript", &["residual-absorbs-zero-block-right", "add-zero-right"], "only the attention block of a layer goes, which GPT-2 adds on the left"),
    ]),
    ("fold.rules", &[
        fires("bert_constant_torchscript", &["fold-constant-channels", "merge-constant-addends"], "zero weights into units with a non-zero bias"),
        fires("llama_mlp_constant_torchscript", &["fold-constant-channels"], "constant gate products of an MLP with biases"),
        quiet("bert_mixed_torchscript", &["fold-constant-channels"], "zeroed units are zero, not constant"),
        quiet("llama_constant_torchscript", &["fold-constant-channels", "merge-constant-addends"], "LLaMA has no biases, so its constant units are zero; TorchScript's -inf mask keeps constant heads"),
    ]),
    ("repeat.rules", &[
        fires("qwen2_heads_torchscript", &["merge-zero-heads-right", "unfold-split-operand-left", "keep-through-repeat-unequal"], "query heads of a KV group go: the group × head axes merge, and the KV heads are gathered"),
        fires("qwen2_kvgroup_torchscript", &["keep-through-repeat"], "a whole KV group goes: repeat_kv keeps equal counts"),
        fires("mistral_unequal_torchscript", &["keep-through-repeat-unequal"], "groups keep different numbers of query heads"),
        quiet("llama_heads_torchscript", &["merge-zero-heads-right", "keep-through-repeat", "keep-through-repeat-unequal"], "multi-head attention: nothing is repeated"),
        quiet("qwen2_ffn_torchscript", &["merge-zero-heads-right", "unfold-split-operand-left", "keep-through-repeat"], "grouped-query attention with no zero head"),
    ]),
    ("conv.rules", &[
        fires("resnet_pruned_torchscript", &["conv-drop-zero-inputs", "keep-through-conv"], "zero input channels of plain and strided 3×3 convs, whose producers then lose those filters"),
        fires("mobilenet_v2_pruned_torchscript", &["keep-through-conv-groups"], "depthwise convs lose the channels the 1×1 projection does not read"),
        fires("grouped_pruned_dynamo", &["conv-drop-zero-inputs"], "a grouped conv's positions zero in every group"),
        quiet("grouped_onegroup_torchscript", &["conv-drop-zero-inputs", "keep-through-conv"], "zero positions in one group only stay"),
        fires("unpadded_constant_dynamo", &["conv-fold-constant-inputs"], "constant channels fold into the bias of an unpadded 3×3 conv"),
        quiet("resnet_constant_torchscript", &["conv-fold-constant-inputs"], "constant channels before a padded 3×3 conv stay (its border windows see zeros)"),
        quiet("mobilenet_v2_pruned_torchscript", &["conv-drop-zero-inputs"], "the zeros are in 1×1 convs, which tract makes matrix products"),
    ]),
];

/// Rules whose left side real exports never produce, as they are mirror images of rules with
/// positive cases (operands the other way round).
const MIRRORS: &[(&str, &str)] = &[
    ("add-zero-left", "add-zero-right"),
    (
        "keep-through-bin-broadcast-left",
        "keep-through-bin-broadcast-right",
    ),
    ("merge-zero-heads-left", "merge-zero-heads-right"),
    ("keep-through-concat-right", "keep-through-concat-left"),
    ("unfold-split-operand-right", "unfold-split-operand-left"),
];

/// A fixture of the manifest at its recorded shapes, or another committed export (the conv
/// fixtures, whose shapes the files state) as it is.
fn load(name: &str) -> TypedModel {
    match manifest().fixtures.into_iter().find(|f| f.name == name) {
        Some(fixture) => fixture.load(),
        None => {
            let path = fixtures_dir().join(format!("{name}.onnx"));
            import_onnx(&path, &ImportOptions::default())
                .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
        }
    }
}

/// How many times each rule fired when slimming the fixture.
fn fired(name: &str) -> BTreeMap<String, usize> {
    let slimmed = Slimmer::new().unwrap().slim(&load(name)).unwrap();
    slimmed.report.saturation.applied
}

#[test]
fn every_rules_file_has_positive_and_negative_cases_naming_its_rules() {
    let rules = default_rules().unwrap();
    let files: BTreeSet<&str> = rules.iter().map(|r| file_name(&r.origin.file)).collect();
    let covered: BTreeSet<&str> = CASES.iter().map(|(file, _)| *file).collect();
    assert_eq!(
        files, covered,
        "rules files without cases, or cases of no file"
    );
    for (file, cases) in CASES {
        assert!(
            cases.iter().any(|c| !c.fires.is_empty()),
            "{file}: no positive case"
        );
        assert!(
            cases.iter().any(|c| !c.quiet.is_empty()),
            "{file}: no negative case"
        );
        for case in *cases {
            for rule in case.fires.iter().chain(case.quiet) {
                assert!(
                    rules
                        .iter()
                        .any(|r| r.name == *rule && file_name(&r.origin.file) == *file),
                    "{file}: case on {} names `{rule}`, not a rule of this file",
                    case.fixture
                );
            }
        }
    }
    let positive: BTreeSet<&str> = CASES
        .iter()
        .flat_map(|(_, cases)| cases.iter().flat_map(|c| c.fires.iter().copied()))
        .collect();
    for rule in &rules {
        let mirror = MIRRORS.iter().find(|(m, _)| *m == rule.name);
        assert!(
            positive.contains(rule.name.as_str())
                || mirror.is_some_and(|(_, of)| positive.contains(of)),
            "{}: rule `{}` has no positive case",
            rule.origin,
            rule.name
        );
    }
}

#[test]
fn rules_fire_where_they_should_and_nowhere_else() {
    let mut failures = vec![];
    for (file, cases) in CASES {
        for case in *cases {
            let fired = fired(case.fixture);
            for rule in case.fires.iter().filter(|r| !fired.contains_key(**r)) {
                failures.push(format!(
                    "{file}: `{rule}` did not fire on {} ({})",
                    case.fixture, case.why
                ));
            }
            for rule in case.quiet.iter().filter(|r| fired.contains_key(**r)) {
                failures.push(format!(
                    "{file}: `{rule}` fired on {} ({})",
                    case.fixture, case.why
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
