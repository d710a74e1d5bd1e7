//! Convolutional networks: every convolution is costed; zero channels are cut through 3×3,
//! strided, dilated, grouped and depthwise convolutions, 2-D and 1-D (torchvision ResNet
//! blocks, MobileNetV2, MobileNetV3 with squeeze-and-excitation and HardSwish, EfficientNet
//! with SiLU gates, ConvNeXt's depthwise 7×7 and Linear MLP, RegNet's grouped convs, a
//! keyword-spotting Conv1d, a YOLOv8-style neck, reflection padding, bilinear upsampling; a
//! residual stream's channels zero in every producer, through the stem's max pooling) to the
//! weights counted by hand (`conv_manifest.json`), and the written model, NNEF or the ONNX file
//! edited, computes what the original computes; `show` and `plan` list the conv channel groups;
//! a model whose zero
//! channels the rules cannot reach (zero in one group of a grouped conv only) is refused with
//! the layer named, not written unchanged as if it were slimmed.

mod common;

use common::{assert_success, fixtures_dir, model_slim};
use model_slim::{initializer_params, read_proto};

/// A conv fixture (`make_fixtures.py conv`): `conv` (3×3 convolutions 3 → 8 → 8 over 16×16,
/// padding 1, a global pool and a linear 8 → 4), `resnet` (torchvision's BasicBlock and
/// Bottleneck at widths 8–32), `mobilenet_v2` (torchvision's, width 0.1), `grouped` (a 3×3 conv
/// of 2 groups between a stem and a 1×1 conv), `mobilenet_v3` (torchvision's small, width 0.25),
/// `kws` (three Conv1d over 10 bands × 49 frames, input `features`), `efficientnet`
/// (torchvision's B0, width 0.1, depth 0.25), `convnext` (torchvision's blocks at widths 16 and
/// 32); `pruned` zeroes half of
/// every inner width (for `grouped`, 2 positions of each group), `grouped_onegroup` 2 positions
/// of the first group only; `detector` (a YOLOv8-style neck: nearest upsampling, a
/// concatenation, a C2f block's split) zeroes inputs of both C2f 1×1 convs; `vgg` (two conv and
/// max pooling stages flattened into a linear classifier) zeroes the classifier's inputs from
/// three channels; `unpadded_constant` leaves constant channels before an unpadded 3×3 conv;
/// `reflect` pads its convs by reflection; `bilinear` upsamples bilinearly between two convs;
/// `regnet` (torchvision's RegNetX, group width 4) zeroes whole groups' inputs of each block's
/// last 1×1 conv; `neck_branch` zeroes a concatenated branch whole;
/// `resnet_coupled` zeroes channels 0–3 of the first stage's residual stream in
/// every producer, `resnet_onebranch` in the first block's branch only. What each zeroes and
/// removes is in `conv_manifest.json`.
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

/// A fixture of `conv_manifest.json` (`make_fixtures.py conv`), one exporter's.
#[derive(serde::Deserialize)]
struct ConvFixture {
    model: String,
    variant: String,
    exporter: String,
    /// Weights a complete slim removes, counted by hand (the derivation is beside it).
    removed_weights: usize,
}

#[derive(serde::Deserialize)]
struct ConvManifest {
    fixtures: Vec<ConvFixture>,
}

/// The fixtures (`model_variant`) a complete slim removes weights from, with their hand
/// counts.
fn hand_counts() -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(fixtures_dir().join("conv_manifest.json"))
        .expect("conv_manifest.json");
    let manifest: ConvManifest = serde_json::from_str(&text).expect("conv manifest parses");
    // Both exporters' files come from one model: one entry each.
    let found: Vec<(String, usize)> = manifest
        .fixtures
        .into_iter()
        .filter(|f| f.exporter == "torchscript" && f.removed_weights > 0)
        .map(|f| (format!("{}_{}", f.model, f.variant), f.removed_weights))
        .collect();
    assert!(!found.is_empty(), "no conv fixture removes weights");
    found
}

/// The `--report` JSON of `slim MODEL -o OUTPUT --verify`, which must succeed.
fn slim_verified(model: &str, output: &std::path::Path) -> serde_json::Value {
    let report = output.with_extension("json");
    let args = ["slim", model, "-o", output.to_str().unwrap(), "--verify"];
    let args = [&args[..], &["--report", report.to_str().unwrap()]].concat();
    assert_success(&model_slim(&args));
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

/// Parameters a `--report` says slimming removed.
fn removed_params(report: &serde_json::Value) -> usize {
    let params = |key: &str| report[key].as_u64().unwrap() as usize;
    params("params_before") - params("params_after")
}

#[test]
fn pruned_conv_nets_lose_every_zero_channel_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        for (name, hand) in hand_counts() {
            let model = fixture(&name, exporter);
            let output = dir.path().join(format!("{name}_{exporter}.nnef.tgz"));
            let report = slim_verified(&model, &output);
            let removed = removed_params(&report);
            // Identical scalars (activation bounds) are merged: a few more go than counted.
            let off = removed.abs_diff(hand);
            assert!(
                off * 100 <= hand,
                "{name} {exporter}: {removed} weights removed, {hand} by hand"
            );
        }
    }
}

#[test]
fn a_grouped_conv_keeps_channels_zero_in_one_group_only_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        // Input channels 0 and 1 feed only the first group, whose filters are zero there: a
        // grouped conv cannot lose them without losing the second group's 0 and 1 too.
        let model = fixture("grouped_onegroup", exporter);
        let output = dir.path().join(format!("onegroup_{exporter}.nnef.tgz"));
        let zero = "has 2 of 8 input channels all zero";
        let stop = "the restriction stops at";
        let grouped = "a conv of 2 groups drops inputs equally in every group or in whole groups";
        assert_refused(
            &model,
            &output,
            &["nothing was cut, though", zero, stop, grouped],
        );

        let allowed = [
            "slim",
            &model,
            "-o",
            output.to_str().unwrap(),
            "--allow-unchanged",
        ];
        let written = assert_success(&model_slim(&allowed));
        assert!(output.exists());
        assert!(written.contains("kept zero"), "{written}");

        let shown = assert_success(&model_slim(&["show", &model]));
        let kept: Vec<&str> = shown
            .lines()
            .filter(|l| l.starts_with("kept zero"))
            .collect();
        assert_eq!(kept.len(), 1, "{exporter}: {shown}");
        assert!(kept[0].contains("2 of 8 input channels all zero"));
        assert!(kept[0].ends_with(grouped), "{}", kept[0]);
        let layers = zero_layers(&shown);
        assert_eq!(layers.len(), 1, "{shown}");
        assert_eq!((layers[0].1, layers[0].2, layers[0].3), (8, 2, Some(8)));
    }
}

#[test]
fn constant_channels_fold_into_a_1x1_conv_and_stay_before_a_padded_3x3() {
    let model = fixture("resnet_constant", "torchscript");
    let options = model_slim::ImportOptions::default();
    let original = model_slim::import_onnx(std::path::Path::new(&model), &options).unwrap();
    let slimmed = model_slim::Slimmer::new().unwrap().slim(&original).unwrap();
    let applied = &slimmed.report.saturation.applied;
    assert!(
        applied.contains_key("fold-constant-channels"),
        "{applied:?}"
    );
    let inputs = |layer| model_slim::layer_input_channels(&slimmed.model, layer);
    // Constant channels before a 3×3 conv padded with zeros.
    assert_eq!(inputs("/m/m.4/conv2/Conv"), Some(8));
    // Four constant channels before a 1×1 conv, folded into its bias.
    assert_eq!(inputs("/m/m.6/conv3/Conv.einsum"), Some(4));
}

#[test]
fn a_channel_zero_in_one_branch_of_a_residual_stream_stays() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        // The first block's branch zeroes channels 0–3, but the identity path still carries
        // them: the stream, and every conv reading it, keeps them. `resnet_coupled` has the
        // same zeros plus the stem's, and loses them.
        let model = fixture("resnet_onebranch", exporter);
        let output = dir.path().join(format!("onebranch_{exporter}.nnef.tgz"));
        assert_eq!(removed_params(&slim_verified(&model, &output)), 0);
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
fn pruned_conv_nets_are_written_as_onnx_with_the_hand_counted_weights_fewer() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        for (name, hand) in hand_counts() {
            let model = fixture(&name, exporter);
            let output = dir.path().join(format!("{name}_{exporter}.onnx"));
            slim_verified(&model, &output);
            // The file's own weights: kernels and biases of the cut convolutions. TorchScript
            // stores identical zero biases once for several convolutions; a cut one gets its
            // own copy, so a few stay (within 1%).
            let before = initializer_params(&read_proto(std::path::Path::new(&model)).unwrap());
            let after = initializer_params(&read_proto(&output).unwrap());
            let off = (before - after).abs_diff(hand);
            assert!(
                off * 100 <= hand,
                "{name} {exporter}: {} weights fewer, {hand} by hand",
                before - after
            );
        }
    }
}

/// The rows of `show`'s table of layers with zero input channels: layer, inputs, zero, and
/// inputs after slimming (`None`: the layer is gone).
fn zero_layers(shown: &str) -> Vec<(String, usize, usize, Option<usize>)> {
    let rows = shown
        .lines()
        .skip_while(|l| !l.starts_with("layer with zero input channels"))
        .skip(1)
        .take_while(|l| !l.starts_with("kept zero"));
    rows.map(|row| {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let number = |i: usize| cells[i].parse::<usize>().unwrap();
        (
            cells[0].to_string(),
            number(1),
            number(2),
            cells[3].parse().ok(),
        )
    })
    .collect()
}

#[test]
fn show_finds_no_zero_channel_left_in_slimmable_conv_nets() {
    for exporter in ["torchscript", "dynamo"] {
        for (name, _) in hand_counts() {
            let shown = assert_success(&model_slim(&["show", &fixture(&name, exporter)]));
            assert!(!shown.contains("kept zero"), "{name} {exporter}: {shown}");
            // Every layer with zero input channels keeps exactly the others.
            let layers = zero_layers(&shown);
            // Constant and coupled channels have zero filters, not zero input slices.
            let zero_inputs = !name.ends_with("_constant") && !name.ends_with("_coupled");
            assert_eq!(
                !layers.is_empty(),
                zero_inputs,
                "{name} {exporter}: {shown}"
            );
            for (layer, inputs, zero, after) in layers {
                assert_eq!(after, Some(inputs - zero), "{name} {exporter}: {layer}");
            }
        }
    }
}

/// The `conv` rows of a groups table (`plan`, `show`): consumer, units, zero units, and, in
/// `show`, the units slimming keeps.
fn conv_groups(table: &str) -> Vec<(String, usize, usize, Option<usize>)> {
    let rows = table.lines().filter(|l| l.starts_with("conv "));
    rows.map(|row| {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let number = |i: usize| cells[i].parse::<usize>().unwrap();
        let kept = cells.get(5).map(|k| k.parse().unwrap());
        (cells[2].to_string(), number(3), number(4), kept)
    })
    .collect()
}

#[test]
fn show_and_plan_list_conv_channel_groups() {
    for exporter in ["torchscript", "dynamo"] {
        // Every block's inner channels, computed by one conv and read by the next (ResNet),
        // through a depthwise conv (MobileNetV2), and by Conv1d (keyword spotting).
        for (name, groups) in [
            ("resnet_pruned", 4),
            ("mobilenet_v2_pruned", 16),
            ("kws_pruned", 3),
        ] {
            let model = fixture(name, exporter);
            let planned = conv_groups(&assert_success(&model_slim(&["plan", &model])));
            let shown = conv_groups(&assert_success(&model_slim(&["show", &model])));
            assert_eq!(planned.len(), groups, "{name} {exporter}: {planned:?}");
            assert!(planned.iter().any(|(_, _, zero, _)| *zero > 0));
            for ((layer, units, zero, _), shown) in planned.iter().zip(&shown) {
                let kept = units - zero;
                assert_eq!(shown, &(layer.clone(), *units, *zero, Some(kept)));
            }
        }
    }
    // A transformer's layers read no convolution's channels.
    let shape = ["-i", "input_ids:1,8,i64", "-i", "attention_mask:1,8,i64"];
    let planned =
        model_slim(&[&["plan", &fixture("gpt2_mixed", "torchscript")], &shape[..]].concat());
    let planned = assert_success(&planned);
    assert!(
        planned.contains("ffn ") && conv_groups(&planned).is_empty(),
        "{planned}"
    );
}
