//! The command line: the demo works, and bad input gives one clear error line, a non-zero exit,
//! no panic and no output file.

mod common;

use common::{assert_success, model_slim};
use std::path::Path;
use std::process::Output;

/// A fixture's layers as its manifest describes them.
fn layers_of(name: &str) -> Vec<common::Layer> {
    common::manifest()
        .fixtures
        .into_iter()
        .find(|f| f.name == name)
        .expect("fixture in the manifest")
        .layers
}

fn fixture(name: &str) -> String {
    model_slim::testing::checkout()
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Asserts a failed run: the exit code, one `model-slim: error:` line naming `needle`, and no output file.
fn assert_clean_failure(out: &Output, code: i32, needle: &str, output_file: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    assert!(stderr.starts_with("model-slim: error: "), "{stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !output_file.exists(),
        "{} was left behind",
        output_file.display()
    );
}

#[test]
fn demo_slims_and_verifies() {
    let out = model_slim(&["demo"]);
    let stdout = assert_success(&out);
    // Per layer: 4 heads, one pruned and one constant; 256 FFN channels, 96 pruned, 32 constant.
    assert!(stdout.contains("4 → 2"), "{stdout}");
    assert!(stdout.contains("256 → 128"), "{stdout}");
    assert!(stdout.contains(" ok"), "{stdout}");
}

#[test]
fn slim_writes_model_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("slim.nnef.tgz");
    let report = dir.path().join("report.json");
    let out = model_slim(&[
        "slim",
        &fixture("bert_ffn_torchscript.onnx"),
        "-o",
        output.to_str().unwrap(),
        "-i",
        "input_ids:1,16,i64",
        "-i",
        "attention_mask:1,16,i64",
        "-i",
        "token_type_ids:1,16,i64",
        "--verify",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output.exists());
    #[cfg(unix)]
    {
        // An ordinary file, not a private temporary one.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&output).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let kept: Vec<u64> = report["ffn_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["channels_after"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = layers_of("bert_ffn_torchscript")
        .iter()
        .map(|l| l.ffn_kept as u64)
        .collect();
    assert_eq!(kept, expected);
    assert_eq!(report["verification"]["passed"], true);
    // What was compared with the original is the file, loaded back.
    assert_eq!(
        report["verification"]["artifact"].as_str(),
        output.to_str(),
        "verification did not run on the written file"
    );
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.nnef.tgz");
    let out_arg = output.to_str().unwrap();

    let missing = dir.path().join("missing.onnx");
    assert_clean_failure(
        &model_slim(&["slim", missing.to_str().unwrap(), "-o", out_arg]),
        1,
        "cannot read",
        &output,
    );

    let not_onnx = dir.path().join("notes.onnx");
    std::fs::write(&not_onnx, "this is not a protobuf\n").unwrap();
    assert_clean_failure(
        &model_slim(&["slim", not_onnx.to_str().unwrap(), "-o", out_arg]),
        1,
        "is not a valid ONNX model",
        &output,
    );

    let bytes = std::fs::read(fixture("llama_mlp_ffn_torchscript.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &model_slim(&["slim", truncated.to_str().unwrap(), "-o", out_arg]),
        1,
        "truncated.onnx",
        &output,
    );

    // A repair asked for without calibration data would silently not happen.
    let repair = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "--ffn-sparsity",
        "0.5",
        "--repair",
        "least-squares",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &repair,
        1,
        "--repair and --score need --calibration",
        &output,
    );
    // A score with a saved plan would choose nothing.
    let plan_and_score = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "--plan",
        "plan.json",
        "--score",
        "fluctuation",
        "--calibration",
        "calibration.npz",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &plan_and_score,
        1,
        "--score chooses the units and --plan gives them",
        &output,
    );
    // So would a layout, a rounding or a sparsity.
    let plan_and_layout = model_slim(&[
        "prune",
        &fixture("qwen2_dense_torchscript.onnx"),
        "--plan",
        "plan.json",
        "--kv-layout",
        "whole",
        "--heads-multiple-of",
        "2",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &plan_and_layout,
        1,
        "--heads-multiple-of, --kv-layout choose the units and --plan gives them",
        &output,
    );
    // Statistics memory without statistics would limit nothing.
    let memory = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "--ffn-sparsity",
        "0.5",
        "--statistics-memory",
        "2",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &memory,
        1,
        "--statistics-memory needs --calibration FILE.npz",
        &output,
    );

    let floor = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "--ffn-sparsity",
        "0.5",
        "--floor",
        "0.3",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &floor,
        1,
        "--floor bounds what --global takes from a layer",
        &output,
    );

    let cost = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "--ffn-sparsity",
        "0.5",
        "--global-cost",
        "outputs",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &cost,
        1,
        "--global-cost weighs what --global takes from each layer",
        &output,
    );
    let uncalibrated = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "--ffn-sparsity",
        "0.5",
        "--global",
        "--global-cost",
        "embeddings",
        "-o",
        out_arg,
    ]);
    assert_clean_failure(
        &uncalibrated,
        1,
        "--global-cost outputs and embeddings measure the model on --calibration FILE.npz",
        &output,
    );

    let unknown = model_slim(&[
        "slim",
        &fixture("llama_mlp_ffn_torchscript.onnx"),
        "-o",
        out_arg,
        "-i",
        "tokens:1,16,i64",
    ]);
    assert_clean_failure(
        &unknown,
        1,
        "no model input named `tokens` (the inputs are: hidden_states)",
        &output,
    );

    let bad_spec = model_slim(&[
        "slim",
        &fixture("llama_mlp_ffn_torchscript.onnx"),
        "-o",
        out_arg,
        "-i",
        "hidden_states:1,16,q7",
    ]);
    assert_clean_failure(&bad_spec, 1, "unknown type `q7`", &output);

    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("mine.rules"),
        "## Broken.\nrule broken\n  match (map ?f ?x\n  => ?x\n",
    )
    .unwrap();
    let bad_rules = model_slim(&[
        "slim",
        &fixture("llama_mlp_ffn_torchscript.onnx"),
        "-o",
        out_arg,
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_clean_failure(&bad_rules, 1, "mine.rules:3:9: bad pattern", &output);

    let bad_format = dir.path().join("out.onnx.bin");
    let wrong_extension = model_slim(&[
        "slim",
        &fixture("llama_mlp_ffn_torchscript.onnx"),
        "-o",
        bad_format.to_str().unwrap(),
    ]);
    assert_clean_failure(&wrong_extension, 1, "unknown format", &bad_format);
}

#[test]
fn symbolic_torchscript_bert_says_which_inputs_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.nnef.tgz");
    let out = model_slim(&[
        "slim",
        &fixture("bert_ffn_torchscript.onnx"),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_clean_failure(
        &out,
        1,
        "-i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64",
        &output,
    );
    // And `--set` makes the declared symbolic shapes concrete, which is enough.
    let out = model_slim(&[
        "slim",
        &fixture("bert_ffn_torchscript.onnx"),
        "-o",
        output.to_str().unwrap(),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prune_writes_onnx_that_loads_with_the_planned_widths() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("pruned_slim.onnx");
    let out = model_slim(&[
        "prune",
        &fixture("qwen2_dense_torchscript.onnx"),
        "-i",
        "input_ids:1,16,i64",
        "-i",
        "attention_mask:1,16,i64",
        "--ffn-sparsity",
        "0.5",
        "--mha-sparsity",
        "0.5",
        "-o",
        output.to_str().unwrap(),
    ]);
    let stdout = assert_success(&out);
    assert!(stdout.contains("as written, loaded back"), "{stdout}");
    let shown = model_slim(&[
        "show",
        output.to_str().unwrap(),
        "-i",
        "input_ids:1,16,i64",
        "-i",
        "attention_mask:1,16,i64",
    ]);
    let stdout = assert_success(&shown);
    let ffn = layers_of("qwen2_dense_torchscript")[0].ffn_width;
    // Half the FFN channels of every layer; half the query heads would be 1.5 of each KV
    // group's 3, and the equal layout rounds to 1 (6 → 4, both KV heads kept).
    assert!(
        stdout.contains(&format!("{:>6} {:>6}", ffn / 2, 0)) && stdout.contains("4 (KV 2)"),
        "{stdout}"
    );
}

#[test]
fn heads_asked_of_a_model_without_attention_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.nnef.tgz");
    let out = model_slim(&[
        "prune",
        &fixture("llama_mlp_dense_torchscript.onnx"),
        "-i",
        "hidden_states:1,16,24,f32",
        "--mha-sparsity",
        "0.5",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, 1, "--mha-sparsity", &output);
}

#[test]
fn plan_lists_query_and_kv_heads_of_grouped_attention() {
    let out = model_slim(&[
        "plan",
        &fixture("qwen2_dense_torchscript.onnx"),
        "-i",
        "input_ids:1,16,i64",
        "-i",
        "attention_mask:1,16,i64",
    ]);
    let stdout = assert_success(&out);
    for line in ["heads  0", "heads  1", "6 (KV 2)", "ffn    0", "ffn    1"] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

/// `prune` of the GQA default export with calibration into `output` (in `dir`), with `extra`
/// arguments; the report's scores and fidelity lines, once the written file checked out.
fn prune_qwen2(dir: &std::path::Path, output: &str, extra: &[&str]) -> (String, String) {
    let output = dir.join(output);
    let out_arg = output.display().to_string();
    let (model, calibration) = (
        fixture("qwen2_dense_torchscript.onnx"),
        fixture("qwen2_calibration.npz"),
    );
    let mut args = vec![
        "prune",
        &model,
        "--ffn-sparsity",
        "0.5",
        "--mha-sparsity",
        "0.34",
        "--calibration",
        &calibration,
        "-i",
        "input_ids:1,16,i64",
        "-i",
        "attention_mask:1,16,i64",
        "-o",
        &out_arg,
    ];
    args.extend(extra);
    let stdout = assert_success(&model_slim(&args));
    assert!(output.exists());
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line: {stdout}"))
            .to_string()
    };
    let scores = line("scores:");
    assert!(line("verify ").ends_with("ok"), "{stdout}");
    (scores, line("fidelity "))
}

#[test]
fn statistics_in_passes_write_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let (at_once, fidelity) = prune_qwen2(dir.path(), "at_once.nnef.tar", &[]);
    assert!(!at_once.contains("passes"), "{at_once}");
    // One byte's worth: every layer's statistics in a pass of its own.
    let one_byte = ["--statistics-memory", "1e-9"];
    let (streamed, streamed_fidelity) = prune_qwen2(dir.path(), "passes.nnef.tar", &one_byte);
    assert!(streamed.contains("in 4 passes"), "{streamed}");
    assert_eq!(fidelity, streamed_fidelity);
    let written = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert_eq!(written("at_once.nnef.tar"), written("passes.nnef.tar"));
}

/// The relative L2 error of a report's fidelity line.
fn relative_l2(fidelity: &str) -> f64 {
    let (_, after) = fidelity.split_once("relative L2 error ").unwrap();
    after.split([',', ' ']).next().unwrap().parse().unwrap()
}

#[test]
fn onnx_output_carries_the_least_squares_refit() {
    let dir = tempfile::tempdir().unwrap();
    // Into the file's own weights (o_proj and down_proj have no bias: the refit's goes into a
    // new one); the written file is checked against the pruned model.
    let (scores, refit) = prune_qwen2(dir.path(), "refit.onnx", &[]);
    assert!(scores.contains("repair: least-squares refit"), "{scores}");
    let nnef = prune_qwen2(dir.path(), "refit.nnef.tar", &[]).1;
    assert_eq!(refit, nnef);
    let compensated = ["--repair", "compensation"];
    let (_, compensation) = prune_qwen2(dir.path(), "compensated.onnx", &compensated);
    assert!(
        relative_l2(&refit) < relative_l2(&compensation),
        "{refit} / {compensation}"
    );
}

#[test]
fn prune_writes_slimmed_model_plan_report_and_pruned_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let out = model_slim(&[
        "prune",
        &fixture("gpt2_dense_dynamo.onnx"),
        "--ffn-sparsity",
        "0.5",
        "--mha-sparsity",
        "0.5",
        "--calibration",
        &fixture("gpt2_calibration.npz"),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
        "-o",
        &path("slim.nnef.tgz"),
        "--plan-out",
        &path("plan.json"),
        "--report",
        &path("report.json"),
        "--emit-pruned",
        &path("pruned.onnx"),
    ]);
    let stdout = assert_success(&out);
    assert!(
        stdout.contains(
            "scores: removal cost; repair: least-squares refit; calibration statistics over"
        ),
        "{stdout}"
    );
    let ffn = layers_of("gpt2_dense_dynamo")[0].ffn_width;
    assert!(
        stdout.contains("4 → 2") && stdout.contains(&format!("{ffn} → {}", ffn / 2)),
        "{stdout}"
    );
    for file in ["slim.nnef.tgz", "plan.json", "report.json", "pruned.onnx"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("report.json")).unwrap()).unwrap();
    let cosine = report["fidelity"][0]["cosine"].as_f64().unwrap();
    assert!(cosine > 0.9 && cosine <= 1.0 + 1e-9, "{cosine}");

    // The emitted ONNX is the pruned model: `slim` cuts it to the planned widths, symbolically.
    let out = model_slim(&[
        "slim",
        &path("pruned.onnx"),
        "-o",
        &path("again.nnef.tgz"),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
        "--verify",
    ]);
    let stdout = assert_success(&out);
    let ffn = layers_of("gpt2_dense_dynamo")[0].ffn_width;
    assert!(
        stdout.contains("4 → 2") && stdout.contains(&format!("{ffn} → {}", ffn / 2)),
        "{stdout}"
    );

    // The saved plan applies again, and a broken one is refused.
    let out = model_slim(&[
        "prune",
        &fixture("gpt2_dense_dynamo.onnx"),
        "--plan",
        &path("plan.json"),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
        "-o",
        &path("replayed.nnef.tgz"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        path("bad.json"),
        r#"{"groups":[{"kind":"ffn","layer":9,"name":"x","units":3,"removed":[0]}]}"#,
    )
    .unwrap();
    let output = dir.path().join("refused.nnef.tgz");
    let out = model_slim(&[
        "prune",
        &fixture("gpt2_dense_dynamo.onnx"),
        "--plan",
        &path("bad.json"),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_clean_failure(
        &out,
        1,
        "bad.json: bad plan: the model has no ffn layer 9",
        &output,
    );
}

#[test]
fn prune_refuses_bad_requests_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("slim.nnef.tgz");
    let o = output.to_str().unwrap();
    let model = fixture("llama_mlp_dense_dynamo.onnx");
    let not_npz = fixture("manifest.json");
    let other_model = fixture("bert_calibration.npz");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--ffn-sparsity", "1.5"],
            "--ffn-sparsity must be between 0 and 1",
        ),
        (
            vec!["--calibration", &not_npz],
            "manifest.json: bad calibration data: not an .npz file",
        ),
        (
            vec!["--calibration", &other_model],
            "no array named `hidden_states`",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["prune", model.as_str(), "-o", o];
        args.extend(extra);
        assert_clean_failure(&model_slim(&args), 1, needle, &output);
    }
}

#[test]
fn show_lists_groups_and_writes_dot() {
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("graph.dot");
    let out = model_slim(&[
        "show",
        &fixture("bert_mixed_dynamo.onnx"),
        "--dot",
        dot.to_str().unwrap(),
    ]);
    let stdout = assert_success(&out);
    // Layer 0: one zero head of 4 and some zero channels; layer 1: all zero.
    for line in ["heads  0", "ffn    0", "heads  1", "ffn    1"] {
        assert!(stdout.contains(line), "{stdout}");
    }
    let layer = &layers_of("bert_mixed_dynamo")[0];
    let channels = format!(
        "{:>6} {:>6}   {}",
        layer.ffn_width,
        layer.ffn_width - layer.ffn_kept,
        layer.ffn_kept
    );
    assert!(stdout.contains("     4      1   3"), "{stdout}");
    assert!(stdout.contains(&channels), "{stdout}");
    let text = std::fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph {") && text.contains("before: ") && text.contains("after: "));
}

#[test]
fn bench_prints_latencies_and_ratios_on_text_image_and_audio_inputs() {
    for model in [
        "llama_mlp_ffn_dynamo.onnx",
        "resnet_pruned_torchscript.onnx",
        "kws_pruned_dynamo.onnx",
    ] {
        let args = ["bench", &fixture(model), "--runs", "3", "--warmup", "1"];
        let stdout = assert_success(&model_slim(&[&args[..], &["--threads", "1"]].concat()));
        assert!(
            stdout.contains("original") && stdout.contains("slimmed"),
            "{stdout}"
        );
        // "latency ratio L (FLOP ratio F, the ideal)": the slimmed model has fewer FLOPs.
        let flop_ratio: f64 = stdout
            .split("FLOP ratio ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|ratio| ratio.parse().ok())
            .unwrap_or_else(|| panic!("{model}: no FLOP ratio in {stdout}"));
        assert!(flop_ratio < 1.0, "{model}: {stdout}");
        assert!(stdout.contains("latency ratio"), "{stdout}");
    }
}

#[test]
fn quiet_prints_nothing_and_every_subcommand_has_examples() {
    let out = model_slim(&["-q", "demo"]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for sub in [
        "slim",
        "prune",
        "plan",
        "show",
        "bench",
        "demo",
        "check-rules",
    ] {
        let out = model_slim(&[sub, "--help"]);
        let stdout = assert_success(&out);
        assert!(
            stdout.contains("Example"),
            "{sub} --help has no example: {stdout}"
        );
    }
}

#[test]
fn slim_writes_onnx_from_an_onnx_source_only() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("slim.onnx");
    let out = model_slim(&[
        "slim",
        &fixture("gpt2_mixed_dynamo.onnx"),
        "-o",
        output.to_str().unwrap(),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
    ]);
    assert_success(&out);
    let reloaded = model_slim(&[
        "show",
        output.to_str().unwrap(),
        "--set",
        "batch=1",
        "--set",
        "sequence=16",
    ]);
    let stdout = assert_success(&reloaded);
    // Layer 0 keeps 3 heads and its non-zero channels; layer 1 loses everything.
    let kept = layers_of("gpt2_mixed_dynamo")[0].ffn_kept;
    assert!(
        stdout.contains("     3      0   3")
            && stdout.contains(&format!("{kept:>6} {:>6}   {kept}", 0)),
        "{stdout}"
    );

    let demo_output = dir.path().join("demo.onnx");
    let out = model_slim(&["demo", "-o", demo_output.to_str().unwrap()]);
    assert_clean_failure(
        &out,
        1,
        "ONNX output is written from the source ONNX file",
        &demo_output,
    );
}

#[test]
fn check_rules_passes_the_defaults_and_catches_a_wrong_rule() {
    let out = model_slim(&["check-rules", "--models", "6"]);
    let stdout = assert_success(&out);
    // Six seeds' models, and the convolutional models of seeds 0, 2 and 4.
    assert!(stdout.contains("the default rules: 9 models"), "{stdout}");
    let wrong = model_slim::testing::checkout().join("tests/wrong_rules");
    let out = model_slim(&["check-rules", wrong.to_str().unwrap(), "--models", "12"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("rule `drop-map` is unsound"), "{stderr}");
}
