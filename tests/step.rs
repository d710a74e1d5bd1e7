//! Generation steps: decoders exported as one decoding step, the KV cache of every layer an
//! input (`past_key_values.{i}.key`/`.value`) and the updated cache an output
//! (`present.{i}.key`/`.value`), as both exporters write them (`step_manifest.json`).
//!
//! tract cannot analyse these with symbolic shapes, so the error says which concrete shapes to
//! give. Those shapes must agree with each other (the mask spans the past and the new tokens):
//! with them, every step slims to the heads and FFN channels its manifest keeps, its cache to
//! the KV heads those read, and the written file, fed the kept slices of the cache and then,
//! call after call, its own, computes the original's logits and the kept slices of its
//! updated cache, paying for no weight twice.

mod common;

use common::{assert_success, fixtures_dir, model_slim, restricted_copies, Layer};
use serde::Deserialize;
use tract_core::internal::*;

#[derive(Deserialize)]
struct StepManifest {
    fixtures: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    name: String,
    file: String,
    state: Vec<StatePair>,
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct StatePair {
    input: String,
    output: String,
}

/// The KV heads a layer's kept query heads read, when some KV head goes.
fn kv_heads_read(layer: &Layer) -> Option<Vec<u64>> {
    let group = layer.heads / layer.kv_heads;
    let mut read: Vec<u64> = (0..layer.heads)
        .filter(|h| !layer.heads_zeroed.contains(h))
        .map(|h| (h / group) as u64)
        .collect();
    read.dedup();
    (read.len() < layer.kv_heads).then_some(read)
}

fn steps() -> Vec<Step> {
    let text = std::fs::read_to_string(fixtures_dir().join("step_manifest.json")).unwrap();
    let manifest: StepManifest = serde_json::from_str(&text).unwrap();
    // 3 families × dense and half, Qwen2 unequal too (its cache must stay), × 2 exporters.
    assert_eq!(manifest.fixtures.len(), 14);
    manifest.fixtures
}

/// The `-i` flags the analysis error of a symbolic load suggests.
fn hinted_inputs(model: &str) -> Vec<String> {
    let out = model_slim(&["show", model]);
    assert!(!out.status.success(), "{model}: analysed symbolically");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (_, hint) = stderr
        .split_once("give shapes tract can analyse, e.g. ")
        .unwrap_or_else(|| panic!("{model}: no shape hint in {stderr}"));
    hint.split_whitespace().map(str::to_string).collect()
}

/// One number of every entry of a report's list (`heads_after` of every attention layer).
fn column(report: &serde_json::Value, list: &str, field: &str) -> Vec<u64> {
    let entries = report[list].as_array().unwrap();
    entries.iter().map(|e| e[field].as_u64().unwrap()).collect()
}

#[test]
fn every_step_slims_and_verifies_at_the_hinted_shapes() {
    let dir = tempfile::tempdir().unwrap();
    for step in steps() {
        let model = fixtures_dir().join(&step.file).display().to_string();
        let hinted = hinted_inputs(&model);
        // One new token after any number of past ones, the mask over both.
        assert!(
            hinted.contains(&"input_ids:1,1,i64".to_string()),
            "{hinted:?}"
        );
        assert!(hinted.contains(&"attention_mask:1,past+1,i64".to_string()));
        for pair in &step.state {
            let flag = hinted
                .iter()
                .find(|f| f.starts_with(&format!("{}:", pair.input)));
            assert!(flag.is_some_and(|f| f.contains(",past,")), "{}", pair.input);
        }

        let output = dir.path().join(format!("{}.nnef.tgz", step.name));
        let report = dir.path().join(format!("{}.json", step.name));
        let mut args = vec!["slim", &model, "-o", output.to_str().unwrap(), "--verify"];
        args.extend(["--report", report.to_str().unwrap()]);
        args.extend(hinted.iter().map(String::as_str));
        assert_success(&model_slim(&args));
        let written = tract_nnef::nnef().model_for_path(&output).unwrap();
        assert_eq!(
            restricted_copies(&written.into_decluttered().unwrap()),
            [],
            "{}: weights written whole and restricted (a KV projection for the cache and again for attention)",
            step.name
        );

        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let verified: Vec<&str> = report["verification"]["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        for pair in &step.state {
            assert!(verified.contains(&pair.output.as_str()), "{}", step.name);
        }
        assert!(verified.contains(&"logits"));
        // Both saturations (before and after the cuts are offered) ran to the end.
        assert_eq!(
            report["saturation"]["stop_reason"], "saturated",
            "{}",
            step.name
        );
        // Over a loop: each call of the written file fed the cache its previous call wrote.
        assert_eq!(
            report["verification"]["calls"].as_u64(),
            Some(model_slim::LOOP_CALLS as u64),
            "{}",
            step.name
        );
        // Query heads by the report; KV heads by the cache below (where groups keep different
        // numbers of query heads, the report counts the KV heads gathered for them).
        let heads = column(&report, "attention_layers", "heads_after");
        let expected: Vec<u64> = step.layers.iter().map(|l| l.heads_kept as u64).collect();
        assert_eq!(heads, expected, "{}: query heads kept", step.name);
        let channels = column(&report, "ffn_layers", "channels_after");
        let expected: Vec<u64> = step.layers.iter().map(|l| l.ffn_kept as u64).collect();
        assert_eq!(channels, expected, "{}: FFN channels kept", step.name);

        // The cache: each layer's key and value keep the KV heads its kept query heads read.
        let cuts: Vec<(String, Vec<u64>)> = report["state_cuts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let kept = c["kept"].as_array().unwrap().iter();
                let input = c["pair"]["input"].as_str().unwrap().to_string();
                (input, kept.map(|k| k.as_u64().unwrap()).collect())
            })
            .collect();
        let expected: Vec<(String, Vec<u64>)> = step
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, layer)| Some((i, kv_heads_read(layer)?)))
            .flat_map(|(i, read)| {
                ["key", "value"].map(|kv| (format!("past_key_values.{i}.{kv}"), read.clone()))
            })
            .collect();
        assert_eq!(cuts, expected, "{}: the cache's kept KV heads", step.name);
    }
}

/// The declared dimensions of a model input or output of an ONNX file: sizes, or the names of
/// symbolic ones.
fn declared_dims(proto: &tract_onnx::pb::ModelProto, name: &str) -> Vec<String> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    let graph = proto.graph.as_ref().unwrap();
    let value = graph
        .input
        .iter()
        .chain(&graph.output)
        .find(|v| v.name == name);
    let Some(type_proto::Value::TensorType(t)) =
        value.and_then(|v| v.r#type.as_ref()?.value.clone())
    else {
        panic!("`{name}` is not declared as a tensor");
    };
    let dims = t.shape.unwrap().dim.into_iter().map(|d| match d.value {
        Some(Value::DimValue(v)) => v.to_string(),
        Some(Value::DimParam(p)) => p,
        None => "?".into(),
    });
    dims.collect()
}

#[test]
fn every_step_written_as_onnx_declares_its_cut_cache() {
    let dir = tempfile::tempdir().unwrap();
    for step in steps() {
        let model = fixtures_dir().join(&step.file).display().to_string();
        let output = dir.path().join(format!("{}.onnx", step.name));
        let report = dir.path().join(format!("{}.json", step.name));
        let mut args = vec!["slim", &model, "-o", output.to_str().unwrap()];
        args.extend(["--report", report.to_str().unwrap()]);
        let hinted = hinted_inputs(&model);
        args.extend(hinted.iter().map(String::as_str));
        assert_success(&model_slim(&args));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        // The edited file, fed the kept slices of the cache and then its own, was checked.
        assert_eq!(
            report["verification"]["calls"].as_u64(),
            Some(model_slim::LOOP_CALLS as u64),
            "{}",
            step.name
        );
        let source = tract_onnx::onnx().proto_model_for_path(&model).unwrap();
        let written = tract_onnx::onnx().proto_model_for_path(&output).unwrap();
        let cuts = report["state_cuts"].as_array().unwrap();
        for pair in &step.state {
            let cut = cuts
                .iter()
                .find(|c| c["pair"]["input"] == pair.input.as_str());
            for name in [&pair.input, &pair.output] {
                let mut expected = declared_dims(&source, name);
                if let Some(cut) = cut {
                    let axis = cut["axis"].as_u64().unwrap() as usize;
                    expected[axis] = cut["kept"].as_array().unwrap().len().to_string();
                }
                // The cut axis only: the cache's length stays symbolic.
                assert_eq!(
                    declared_dims(&written, name),
                    expected,
                    "{}: {name}",
                    step.name
                );
            }
        }
        let cut_pairs = step
            .layers
            .iter()
            .filter(|l| kv_heads_read(l).is_some())
            .count()
            * 2;
        assert_eq!(cuts.len(), cut_pairs, "{}", step.name);
    }
}

/// The Qwen2 step with its cache named outside the HF/optimum layout (`cache.{i}.k` in,
/// `cache_out.{i}.k` out) and the shapes to slim it at.
fn renamed_step() -> (String, Vec<String>) {
    let model = fixtures_dir().join("qwen2_step_half_torchscript_renamed.onnx");
    let mut flags = vec![
        "-i",
        "input_ids:1,1,i64",
        "-i",
        "attention_mask:1,past+1,i64",
    ];
    let caches = ["cache.0.k", "cache.0.v", "cache.1.k", "cache.1.v"];
    let specs: Vec<String> = caches
        .iter()
        .map(|c| format!("{c}:1,2,past,4,f32"))
        .collect();
    for spec in &specs {
        flags.extend(["-i", spec.as_str()]);
    }
    let flags = flags.into_iter().map(str::to_string).collect();
    (model.display().to_string(), flags)
}

/// The state cuts and verified calls of `slim --verify` with `extra` flags.
fn cuts_and_calls(model: &str, flags: &[String], extra: &[String]) -> (usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("step.nnef.tgz");
    let report = dir.path().join("report.json");
    let mut args = vec!["slim", model, "-o", output.to_str().unwrap(), "--verify"];
    args.extend(["--report", report.to_str().unwrap()]);
    args.extend(flags.iter().chain(extra).map(String::as_str));
    assert_success(&model_slim(&args));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let cuts = report["state_cuts"].as_array().unwrap().len();
    (cuts, report["verification"]["calls"].as_u64().unwrap())
}

#[test]
fn state_pairs_named_otherwise_are_given_with_state() {
    let (model, flags) = renamed_step();
    // Unnamed, the cache is an ordinary input: kept whole, checked in one call.
    assert_eq!(cuts_and_calls(&model, &flags, &[]), (0, 1));
    let given: Vec<String> = ["0.k", "0.v", "1.k", "1.v"]
        .iter()
        .flat_map(|n| ["--state".into(), format!("cache.{n}=cache_out.{n}")])
        .collect();
    let loop_calls = model_slim::LOOP_CALLS as u64;
    assert_eq!(cuts_and_calls(&model, &flags, &given), (4, loop_calls));
}

#[test]
fn the_shape_hint_follows_the_state_pairs_given() {
    let (model, _) = renamed_step();
    let given = ["0.k", "0.v", "1.k", "1.v"].map(|n| format!("cache.{n}=cache_out.{n}"));
    let mut args = vec!["show", model.as_str()];
    for state in &given {
        args.extend(["--state", state.as_str()]);
    }
    let out = model_slim(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // One new token, the mask over the past and it, every cache at the past's length.
    for flag in [
        "input_ids:1,1,i64",
        "attention_mask:1,past+1,i64",
        "cache.1.v:1,2,past,4,f32",
    ] {
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn a_state_pair_naming_no_input_or_output_is_a_clear_error() {
    let (model, flags) = renamed_step();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("step.nnef.tgz");
    for (state, needle) in [
        ("cache.0.k=nope", "no output `nope`"),
        ("nope=cache_out.0.k", "no input `nope`"),
        ("cache.0.k", "expected INPUT=OUTPUT"),
        ("cache.0.k=logits", "cannot be fed back as the input"),
    ] {
        let mut args = vec!["slim", model.as_str(), "-o", output.to_str().unwrap()];
        args.extend(flags.iter().map(String::as_str));
        args.extend(["--state", state]);
        let out = model_slim(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{state}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{state}: {stderr}");
        assert!(!output.exists());
    }
}

#[test]
fn show_lists_the_state_pairs_a_slim_would_cut() {
    let model = fixtures_dir().join("gpt2_step_half_dynamo.onnx");
    let model = model.display().to_string();
    let hinted = hinted_inputs(&model);
    let mut args = vec!["show", model.as_str()];
    args.extend(hinted.iter().map(String::as_str));
    let shown = assert_success(&model_slim(&args));
    assert!(
        shown.contains("state  past_key_values.1.value → present.1.value: axis 1 keeps 2 of 4"),
        "{shown}"
    );
    assert!(shown.contains("state: 4 of 4 pairs cut, 384 → 192 bytes per token"));
}

/// `prune`'s report on a step fixture calibrated with prompts (each a prefill's cache and the
/// next token): the cache pairs cut, the calls verified, the warnings.
fn prune_step(file: &str, flags: &[&str]) -> (usize, u64, Vec<String>) {
    let model = fixtures_dir().join(file).display().to_string();
    let family = file.split('_').next().unwrap();
    let calibration = fixtures_dir().join(format!("{family}_step_calibration.npz"));
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("step.onnx");
    let report = dir.path().join("report.json");
    let mut args = vec!["prune", &model, "-o", output.to_str().unwrap()];
    args.extend(["--calibration", calibration.to_str().unwrap()]);
    args.extend(["--report", report.to_str().unwrap()]);
    args.extend(flags);
    let hinted = hinted_inputs(&model);
    args.extend(hinted.iter().map(String::as_str));
    assert_success(&model_slim(&args));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let slim = &report["slim"];
    let warnings = report["warnings"].as_array().unwrap().iter();
    (
        slim["state_cuts"].as_array().unwrap().len(),
        slim["verification"]["calls"].as_u64().unwrap(),
        warnings.map(|w| w.as_str().unwrap().to_string()).collect(),
    )
}

#[test]
fn prune_cuts_the_cache_of_the_heads_it_removes() {
    let loop_calls = model_slim::LOOP_CALLS as u64;
    let halves = ["--ffn-sparsity", "0.5", "--mha-sparsity", "0.5"];
    for exporter in ["torchscript", "dynamo"] {
        let gpt2 = format!("gpt2_step_dense_{exporter}.onnx");
        let qwen2 = format!("qwen2_step_dense_{exporter}.onnx");
        // Every removed head leaves the cache; the mask of a step lines up with its new token.
        assert_eq!(
            prune_step(&gpt2, &halves),
            (4, loop_calls, vec![]),
            "{exporter}"
        );
        // Grouped-query attention: whole KV groups leave the cache, equal layouts keep it.
        let whole = [&halves[..], &["--kv-layout", "whole"]].concat();
        assert_eq!(prune_step(&qwen2, &whole).0, 4, "{exporter}");
        assert_eq!(prune_step(&qwen2, &halves).0, 0, "{exporter}");
    }
}

#[test]
fn a_step_at_a_fixed_cache_length_says_it_was_checked_once() {
    let model = fixtures_dir().join("gpt2_step_half_dynamo.onnx");
    let model = model.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("step.nnef.tgz");
    let mut args = vec![
        "slim",
        model.as_str(),
        "-o",
        output.to_str().unwrap(),
        "--verify",
    ];
    args.extend(["-i", "input_ids:1,1,i64", "-i", "attention_mask:1,8,i64"]);
    let caches: Vec<String> = ["0.key", "0.value", "1.key", "1.value"]
        .iter()
        .map(|n| format!("past_key_values.{n}:1,4,7,6,f32"))
        .collect();
    for cache in &caches {
        args.extend(["-i", cache.as_str()]);
    }
    let out = assert_success(&model_slim(&args));
    assert!(
        out.contains("run on seed 0 once: the state's length is fixed"),
        "{out}"
    );
}
