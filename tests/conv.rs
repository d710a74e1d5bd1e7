//! Convolutional networks: every convolution is costed; zero channels are cut through 3×3,
//! strided, dilated, grouped and depthwise convolutions, 2-D and 1-D (torchvision ResNet
//! blocks, MobileNetV2, MobileNetV3 with squeeze-and-excitation and HardSwish, EfficientNet
//! with SiLU gates, ConvNeXt's depthwise 7×7 and Linear MLP, a RegNet-style
//! grouped conv, a keyword-spotting Conv1d; a residual stream's channels zero in every producer,
//! through the stem's max pooling) to the weights counted by hand, and the written
//! model, NNEF or the ONNX file edited, computes what the original computes; a model whose zero
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
/// `resnet_coupled` zeroes channels 0–3 of the first stage's residual stream in
/// every producer, `resnet_onebranch` in the first block's branch only.
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

/// Weights a complete slim removes from each pruned fixture, counted by hand from the
/// architectures (BatchNorm folded into each conv's bias; `k` zeroed of `n`):
/// - `conv`: the first conv's 4 filters (4 · 3·3·3 + 4 biases) and the second's 4 input
///   slices (8 · 4·3·3): 112 + 288.
/// - `resnet`: BasicBlock(8): conv1's 4 filters (4·8·9 + 4) and conv2's 4 inputs (8·4·9) = 580;
///   BasicBlock(8 → 16): 8 filters (8·8·9 + 8) and 8 inputs (16·8·9) = 1736; Bottleneck(16, width
///   8): conv1 (1×1) 4 filters (4·16 + 4), conv2 4 inputs and 4 filters (8·8·9 + 8 − 4·4·9 − 4
///   = 436), conv3 (1×1) 4 inputs (32·4) = 632.
/// - `mobilenet_v2`: every inverted residual loses half its expanded width `h`: the
///   projection's inputs (`out · h/2`), the depthwise filters and biases (`h/2 · 10`) and the
///   expansion's filters and biases (`h/2 · (in + 1)`, none in the first block), summed over
///   torchvision's blocks at width 0.1.
/// - `grouped`: the stem's 4 filters (4 · 27 + 4) and the grouped conv's 2 positions in each of
///   its 8 filters (8 · 2·3·3): 112 + 144.
/// - `mobilenet_v3` (small, width 0.25): every block loses half its expanded width `h` from its
///   projection (`out · h/2`); a block that squeezes (SE) pools every channel, so only its
///   gate's `fc2` rows go besides (`h/2 · squeeze`; torchvision initialises conv biases to
///   zero, and tract drops zero biases), 4 + 12 + 32 + 32 + 16 + 20 + 36 + 72 + 72 = 296 of
///   them over 9 blocks; the two blocks without SE lose their depthwise filters and biases
///   (12 · 10) and expansion filters and biases (12 · 9) too: 15016 in all.
/// - `kws`: the first Conv1d's 8 filters (8 · 10·3 + 8), the second's 8 filters and 8 input
///   slices (16·16·3 + 16 − (8·8·3 + 8)), the third's 8 input slices (16 · 8·3): 248 + 584 + 384.
/// - `resnet_constant` (BatchNorm scales zeroed, shifts 0.3, −0.2, 0.5, 0.1): the Bottleneck's
///   4 constant `conv2` channels (one ReLU makes zero) fold into the 1×1 `conv3`'s bias (4
///   filters, 4·8·9 + 4, and 4 inputs, 32·4): 420. The first BasicBlock's 4 constant `conv1`
///   channels, read by a padded 3×3 conv that also sees the padding, stay (the one ReLU makes
///   zero could go: a known zero is not yet a zero slice).
/// - `resnet_coupled` (channels 0–3 of the first stage's residual stream zero in the stem and
///   in the first BasicBlock's `conv2`): the stem's 4 filters (4 · 3·3·3 + 4), the first
///   block's `conv1` inputs (8 · 4·3·3) and `conv2` filters (4 · 8·3·3 + 4), the next block's
///   `conv1` inputs (16 · 4·3·3) and downsample inputs (16 · 4): 112 + 288 + 292 + 576 + 64.
/// - `efficientnet` (B0 at width 0.1, depth 0.25: 7 MBConv blocks with SE): every block loses
///   half its expanded width `h` from its projection (`out · h/2`) and its gate's `fc2` rows
///   and biases (`h/2 · (squeeze + 1)`); the SE pool reads every channel, so the depthwise and
///   expansion convs keep them. `(h, out, squeeze)` = (8, 8, 2), (48, 8, 2) three times,
///   (48, 16, 2), (96, 24, 4), (144, 32, 6): 4448 + 1044.
/// - `convnext` (blocks of width 16 and 32, MLP 4×): the second Linear's half hidden inputs
///   (`d · 2d`) and the first Linear's rows and biases (`2d · (d + 1)`): 1056 + 4160.
/// - `unpadded_constant` (BatchNorm scales zeroed under positive shifts before an unpadded
///   3×3 conv): the first conv's 4 constant filters (4 · 3·3·3 + 4) and the second conv's 4
///   inputs (8 · 4·3·3), folded into its bias: 112 + 288.
/// - `vgg`: the classifier's 48 zero columns (10 · 48) and the last conv's 3 filters
///   (3 · 8·3·3 + 3), through the max pooling and the flattening: 480 + 219.
/// - `reflect` (reflection-padded convs: a `Pad` before each): as `conv`, through the second
///   conv's padding: 112 + 288.
/// - `neck_branch`: the fusing conv's 8 inputs of the right branch (8 · 8·3·3) and the
///   branch's conv (8 · 3·3·3 + 8), which nothing reads any more: 576 + 224. In ONNX, the
///   concatenation keeps its other input, and the branch's nodes and initializers go.
/// - `neck`: the 3×3 fusing conv's 6 zero inputs (8 · 6·3·3), the left branch's 2 filters
///   (2 · 27 + 2) and the right's 4 (4 · 28): 432 + 56 + 112.
const HAND_COUNTS: &[(&str, usize)] = &[
    ("conv_pruned", 400),
    ("neck_pruned", 600),
    ("resnet_constant", 420),
    ("resnet_pruned", 2948),
    ("resnet_coupled", 1332),
    ("mobilenet_v2_pruned", 19896),
    ("grouped_pruned", 256),
    ("mobilenet_v3_pruned", 15016),
    ("kws_pruned", 1216),
    ("efficientnet_pruned", 5492),
    ("convnext_pruned", 5216),
    ("vgg_pruned", 699),
    ("unpadded_constant", 400),
    ("reflect_pruned", 400),
    ("neck_branch", 800),
];

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
        for (name, hand) in HAND_COUNTS {
            let model = fixture(name, exporter);
            let output = dir.path().join(format!("{name}_{exporter}.nnef.tgz"));
            let report = slim_verified(&model, &output);
            let removed = removed_params(&report);
            // Identical scalars (activation bounds) are merged: a few more go than counted.
            let off = removed.abs_diff(*hand);
            assert!(
                off * 100 <= *hand,
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

/// Fixtures slimmed exactly in NNEF whose ONNX output the writer refuses, with the weights a
/// complete slim removes (counted by hand) and what the refusal says:
/// - `detector_pruned` (a YOLOv8-style neck: upsampling, concatenation, C2f split): the C2f's
///   first 1×1 conv loses 8 inputs (16 · 8) and, of the split's first half, 4 filters
///   (4 · 16 + 4); the deeper stage's 3×3 conv 8 filters (8 · 8·3·3 + 8), through the nearest
///   upsampling and the concatenation; the last 1×1 conv 8 inputs (16 · 8); the bottleneck's
///   second conv 4 filters (4 · 8·3·3 + 4): 196 + 584 + 128 + 292. tract makes both 1×1 convs
///   matrix products split over the concatenation's and the split's parts, which the ONNX
///   writer cannot map back to one ONNX kernel.
const NNEF_ONLY: &[(&str, usize, &str)] = &[(
    "detector_pruned",
    1200,
    "the ONNX writer cannot express this slimming: write NNEF",
)];

#[test]
fn nnef_only_fixtures_lose_their_hand_count_and_onnx_output_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    for exporter in ["torchscript", "dynamo"] {
        for (name, hand, refusal) in NNEF_ONLY {
            let model = fixture(name, exporter);
            let nnef = dir.path().join(format!("{name}_{exporter}.nnef.tgz"));
            let removed = removed_params(&slim_verified(&model, &nnef));
            assert_eq!(removed, *hand, "{name} {exporter}");
            // Nothing half-edited is written.
            let onnx = dir.path().join(format!("{name}_{exporter}.onnx"));
            let args = ["slim", &model, "-o", onnx.to_str().unwrap()];
            let out = model_slim(&args);
            assert!(!out.status.success(), "{name} {exporter}");
            assert!(!onnx.exists());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(refusal), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
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
        for (name, hand) in HAND_COUNTS {
            let model = fixture(name, exporter);
            let output = dir.path().join(format!("{name}_{exporter}.onnx"));
            slim_verified(&model, &output);
            // The file's own weights: kernels and biases of the cut convolutions. TorchScript
            // stores identical zero biases once for several convolutions; a cut one gets its
            // own copy, so a few stay (within 1%).
            let before = initializer_params(&read_proto(std::path::Path::new(&model)).unwrap());
            let after = initializer_params(&read_proto(&output).unwrap());
            let off = (before - after).abs_diff(*hand);
            assert!(
                off * 100 <= *hand,
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
        for (name, _) in HAND_COUNTS {
            let shown = assert_success(&model_slim(&["show", &fixture(name, exporter)]));
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
