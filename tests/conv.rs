//! Convolutional networks as the pass meets them before it cuts convolutions: every
//! convolution is costed, and a model whose zero channels the rules do not reach (a 3×3
//! convolution's, torchvision ResNet blocks') is refused with the layer named, not written
//! unchanged as if it were slimmed.

mod common;

use common::{assert_success, fixtures_dir, model_slim};

/// A conv fixture (`make_fixtures.py conv`): `conv` (3×3 convolutions 3 → 8 → 8 over 16×16,
/// padding 1, a global pool and a linear 8 → 4), `resnet` (torchvision's BasicBlock and
/// Bottleneck at widths 8–32), `mobilenet_v2` (torchvision's, width 0.1); `pruned` zeroes half
/// of every inner width.
fn fixture(name: &str, exporter: &str) -> String {
    let path = fixtures_dir().join(format!("{name}_{exporter}.onnx"));
    path.display().to_string()
}

/// Runs `slim MODEL -o OUTPUT`, which must fail with one line saying `needles` and leave no
/// output behind.
fn assert_refused(model: &str, output: &std::path::Path, needles: &[&str]) {
    let out = model_slim(&["slim", model, "-o", output.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{model}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{model}: {stderr}");
    }
    assert!(!output.exists());
}

#[test]
fn zero_channels_the_rules_do_not_reach_are_refused_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        // The first layer with zero input channels: the second conv, and the first
        // BasicBlock's `conv2`.
        for (name, zero) in [("conv_pruned", "4 of 8"), ("resnet_pruned", "4 of 8")] {
            let model = fixture(name, exporter);
            let output = dir.path().join(format!("{name}_{exporter}.nnef.tgz"));
            let zero = format!("{zero} input channels all zero");
            assert_refused(&model, &output, &["nothing was cut, though", &zero]);

            let allowed = [
                "slim",
                &model,
                "-o",
                output.to_str().unwrap(),
                "--allow-unchanged",
            ];
            assert_success(&model_slim(&allowed));
            assert!(output.exists());
        }
    }
}

#[test]
fn a_model_without_zero_channels_is_written_without_complaint() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        for name in ["conv_dense", "resnet_dense"] {
            let model = fixture(name, exporter);
            let output = dir.path().join(format!("{name}_{exporter}.nnef.tgz"));
            let args = ["slim", &model, "-o", output.to_str().unwrap(), "--verify"];
            assert_success(&model_slim(&args));
        }
    }
}

#[test]
fn every_convolution_is_costed() {
    // Multiply-adds of the two 3×3 convolutions at batch 1, two FLOPs each.
    let convolutions = 2.0 * (16.0 * 16.0 * 8.0 * 9.0) * (3.0 + 8.0);
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        let model = fixture("conv_pruned", exporter);
        let output = dir.path().join("out.nnef.tgz");
        let report = dir.path().join("report.json");
        let mut args = vec!["slim", &model, "-o", output.to_str().unwrap()];
        args.extend(["--allow-unchanged", "--report", report.to_str().unwrap()]);
        args.extend(["-i", "pixel_values:1,3,16,16,f32"]);
        assert_success(&model_slim(&args));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let flops = report["flops_before"].as_f64().unwrap();
        // The rest (activations, pool, classifier) is a few thousand.
        assert!(
            flops >= convolutions && flops < convolutions * 1.05,
            "{exporter}: {flops} FLOPs, the convolutions alone {convolutions}"
        );
    }
}

#[test]
fn cuts_the_onnx_writer_cannot_replay_are_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        // MobileNetV2's 1×1 convolutions reach the rules as matrix products, and some of their
        // channels go (NNEF keeps the cut); the ONNX writer finds no FFN or heads group there.
        let model = fixture("mobilenet_v2_pruned", exporter);
        let nnef = dir.path().join(format!("{exporter}.nnef.tgz"));
        let report = dir.path().join(format!("{exporter}.json"));
        let args = ["slim", &model, "-o", nnef.to_str().unwrap()];
        assert_success(&model_slim(
            &[&args[..], &["--report", report.to_str().unwrap()]].concat(),
        ));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let (before, after) = (
            report["params_before"].as_u64(),
            report["params_after"].as_u64(),
        );
        assert!(after < before, "{exporter}: {before:?} → {after:?}");

        let onnx = dir.path().join(format!("{exporter}.onnx"));
        assert_refused(&model, &onnx, &["the ONNX writer cannot replay"]);
    }
}

#[test]
fn show_names_every_layer_that_keeps_zero_input_channels() {
    for exporter in ["torchscript", "dynamo"] {
        let model = fixture("resnet_pruned", exporter);
        let shown = assert_success(&model_slim(&["show", &model]));
        let kept: Vec<&str> = shown
            .lines()
            .filter(|l| l.starts_with("kept zero"))
            .collect();
        // The three blocks' inner 3×3 convolutions, and the Bottleneck's 1×1 `conv3`, whose
        // restriction stops at the 3×3 convolution computing its input.
        assert_eq!(kept.len(), 4, "{exporter}: {shown}");
        assert!(
            kept[0].ends_with("4 of 8 input channels all zero"),
            "{kept:?}"
        );
    }
}
