//! Models whose weights live in external data files, as exporters write models over 2 GB: they
//! import, slim to NNEF and to ONNX (written with its own external data file beside it), reload
//! in tract and compute what the original computes; bad locations are clear errors.

mod common;

use model_slim::{compare_output, import_onnx, random_inputs, run, ImportOptions};
use prost::Message;
use std::path::Path;
use tract_core::internal::*;
use tract_onnx::pb::tensor_proto::DataLocation;
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

// TorchScript: it also writes `Constant` values, which go external too.
const FIXTURE: &str = "gpt2_mixed_torchscript.onnx";
const SETS: [&str; 4] = ["--set", "batch=1", "--set", "sequence=16"];

fn options() -> ImportOptions {
    ImportOptions {
        inputs: vec![],
        sets: vec![("batch".into(), 1), ("sequence".into(), 16)],
        states: vec![],
    }
}

/// Writes the fixture to `dir/model.onnx` with every initializer of 1 KB or more, and every
/// `Constant` value of 16 bytes or more, moved to the external file `location(i)` (relative to
/// `dir`) of the `i`-th such tensor.
fn with_external_data(dir: &Path, location: impl Fn(usize) -> String) -> std::path::PathBuf {
    let bytes = std::fs::read(common::fixtures_dir().join(FIXTURE)).unwrap();
    let mut proto = ModelProto::decode(&bytes[..]).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let mut offsets = std::collections::HashMap::<String, usize>::new();
    // Initializers, and `Constant` values as the TorchScript exporter writes them.
    let constants = graph
        .node
        .iter_mut()
        .flat_map(|n| n.attribute.iter_mut())
        .filter_map(|a| a.t.as_mut())
        .filter(|t| t.raw_data.len() >= 16);
    let big = graph
        .initializer
        .iter_mut()
        .filter(|t| t.raw_data.len() >= 1024)
        .chain(constants);
    for (i, t) in big.enumerate() {
        let file = location(i);
        let path = dir.join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let offset = offsets.entry(file.clone()).or_default();
        let mut data = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut data, &t.raw_data).unwrap();
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.into(),
            value,
        };
        t.external_data = vec![
            entry("location", file),
            entry("offset", offset.to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        *offset += t.raw_data.len();
        t.raw_data.clear();
        t.data_location = Some(DataLocation::External as i32);
    }
    let model = dir.join("model.onnx");
    std::fs::write(&model, proto.encode_to_vec()).unwrap();
    model
}

/// The model at `path` computes what the fixture computes, on two seeded inputs.
fn matches_the_fixture(path: &Path) {
    let original = import_onnx(&common::fixtures_dir().join(FIXTURE), &options()).unwrap();
    let loaded = import_onnx(path, &options()).unwrap();
    for seed in 0..2 {
        let inputs = random_inputs(&original, seed, &SymbolValues::default()).unwrap();
        let (expected, got) = (
            run(&original, inputs.clone()).unwrap(),
            run(&loaded, inputs).unwrap(),
        );
        for (e, g) in expected.iter().zip(&got) {
            let diff = compare_output("output".into(), e, g).unwrap();
            assert!(diff.passed, "{}: {diff:?}", path.display());
        }
    }
}

#[test]
fn external_data_in_one_file_slims_to_onnx_with_its_own_data_file_and_to_nnef() {
    let dir = tempfile::tempdir().unwrap();
    let model = with_external_data(dir.path(), |_| "model.onnx.data".into());
    assert!(
        std::fs::metadata(&model).unwrap().len() < 64 * 1024,
        "the weights are outside"
    );
    matches_the_fixture(&model);

    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("slim.onnx");
    common::assert_success(&common::slim_to(&model, &output, &SETS));
    let data = out_dir.path().join("slim.onnx.data");
    let (model_bytes, data_bytes) = (
        std::fs::metadata(&output).unwrap().len(),
        std::fs::metadata(&data).unwrap().len(),
    );
    assert!(
        model_bytes < 64 * 1024 && data_bytes > 0,
        "{model_bytes} + {data_bytes}"
    );
    // Only the kept slices are written.
    let source_data = std::fs::metadata(dir.path().join("model.onnx.data"))
        .unwrap()
        .len();
    assert!(
        data_bytes < source_data,
        "{data_bytes} of {source_data} bytes"
    );
    // Nothing else is left beside the output (no scratch directory).
    let left: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    matches_the_fixture(&output);

    let nnef = out_dir.path().join("slim.nnef.tgz");
    common::assert_success(&common::slim_to(&model, &nnef, &SETS));
}

#[test]
fn external_data_in_several_files_and_directories_slims() {
    let dir = tempfile::tempdir().unwrap();
    let model = with_external_data(dir.path(), |i| match i % 3 {
        0 => "weights/a.bin".into(),
        1 => "weights/deeper/b.bin".into(),
        _ => "c.bin".into(),
    });
    matches_the_fixture(&model);
    let output = dir.path().join("out").join("slim.onnx");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    common::assert_success(&common::slim_to(&model, &output, &SETS));
    assert!(output.with_extension("onnx.data").exists());
    matches_the_fixture(&output);
}

#[test]
fn external_data_outside_the_model_directory_or_missing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    for (location, needle) in [
        ("../outside.bin", "outside"),
        ("missing.bin", "missing.bin"),
    ] {
        let model = with_external_data(&inner, |_| "w.bin".into());
        // Point every tensor elsewhere.
        let mut proto = ModelProto::decode(&std::fs::read(&model).unwrap()[..]).unwrap();
        for t in &mut proto.graph.as_mut().unwrap().initializer {
            for e in t.external_data.iter_mut().filter(|e| e.key == "location") {
                e.value = location.into();
            }
        }
        std::fs::write(&model, proto.encode_to_vec()).unwrap();
        std::fs::write(dir.path().join("outside.bin"), vec![0u8; 1 << 20]).unwrap();
        let output = dir.path().join("slim.onnx");
        let out = common::slim_to(&model, &output, &SETS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(needle) && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(!output.exists());
        std::fs::remove_dir_all(&inner).unwrap();
        std::fs::create_dir_all(&inner).unwrap();
    }
}

#[test]
fn a_truncated_external_data_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = with_external_data(dir.path(), |_| "w.bin".into());
    let data = dir.path().join("w.bin");
    let size = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    for name in ["slim.onnx", "slim.nnef.tar"] {
        let output = dir.path().join(name);
        let out = common::slim_to(&model, &output, &SETS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("model.onnx") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!output.exists());
    }
}
