//! Writing: a slimmed model is saved as NNEF (`.nnef.tgz` or `.nnef.tar`) that stock tract loads,
//! or — when it came from an ONNX file — as that file edited ([`crate::io::onnx::writeback`]).
//!
//! tract 0.23.9 cannot serialize `GeluExact`, so it is written as the expression it stands for,
//! `0.5·x·(1 + erf(x/√2))`, which tract's declutter fuses back into `GeluExact` on load.
//! Files are written to a temporary file beside the target, loaded back as a consumer would load
//! them (and compared with the original when asked), and renamed into place only then, so an
//! error never leaves a truncated, unloadable or wrong model where one was asked for.

use crate::io::error::{IoError, IoResult};
use crate::model::state::StateCut;
use crate::model::verify::{Expected, Verification};
use crate::util::files::{persist, scratch_beside};
use std::io::Write;
use std::path::Path;
use tract_core::internal::*;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{add, erf, mul};
use tract_core::ops::nn::GeluExact;

/// Output formats, chosen by file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Gzipped NNEF archive (`.nnef.tgz`).
    NnefTgz,
    /// Uncompressed NNEF archive (`.nnef.tar`).
    NnefTar,
    /// ONNX (`.onnx`): the source ONNX file with the slimming replayed on it.
    Onnx,
}

impl Format {
    /// The format a path asks for, or the error naming the path when its name says none.
    pub fn required(path: &Path) -> IoResult<Format> {
        Format::of(path).ok_or_else(|| IoError::Write {
            path: path.display().to_string(),
            message: "unknown format: use a .onnx, .nnef.tgz or .nnef.tar file name".into(),
        })
    }

    /// The format a path asks for, from its extension.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_lowercase();
        if name.ends_with(".nnef.tgz") || name.ends_with(".nnef.tar.gz") {
            Some(Format::NnefTgz)
        } else if name.ends_with(".nnef.tar") {
            Some(Format::NnefTar)
        } else if name.ends_with(".onnx") {
            Some(Format::Onnx)
        } else {
            None
        }
    }
}

/// Rewrites every `GeluExact` into its erf expression (ops every NNEF reader of tract knows).
pub fn expand_gelu(model: &TypedModel) -> TractResult<TypedModel> {
    let mut model = model.clone();
    let gelus: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<ElementWiseOp>()
                .is_some_and(|e| e.0.is::<GeluExact>())
        })
        .map(|n| n.id)
        .collect();
    for id in gelus {
        let node = model.node(id).clone();
        let fact = model.outlet_fact(node.inputs[0])?.clone();
        let mut patch = TypedModelPatch::new(format!("expand {}", node.name));
        let x = patch.tap_model(&model, node.inputs[0])?;
        let scalar = |v: f32| -> TractResult<Arc<Tensor>> {
            Ok(tensor0(v)
                .cast_to_dt(fact.datum_type)?
                .into_owned()
                .broadcast_into_rank(fact.rank())?
                .into_arc_tensor())
        };
        let name = &node.name;
        let inv_sqrt2 = patch.add_const(
            format!("{name}.inv_sqrt2"),
            scalar(std::f32::consts::FRAC_1_SQRT_2)?,
        )?;
        let one = patch.add_const(format!("{name}.one"), scalar(1.0)?)?;
        let half = patch.add_const(format!("{name}.half"), scalar(0.5)?)?;
        let scaled = patch.wire_node(format!("{name}.scaled"), mul(), &[x, inv_sqrt2])?;
        let erf = patch.wire_node(format!("{name}.erf"), erf(), &scaled)?;
        let shifted = patch.wire_node(format!("{name}.shifted"), add(), &[erf[0], one])?;
        let halved = patch.wire_node(format!("{name}.halved"), mul(), &[x, half])?;
        let gelu = patch.wire_node(format!("{name}.gelu"), mul(), &[halved[0], shifted[0]])?;
        patch.shunt_outside(&model, OutletId::new(id, 0), gelu[0])?;
        patch.apply(&mut model)?;
    }
    model.into_compact()
}

/// Serializes a model as NNEF in the given format into `file`, streamed (never the whole
/// archive in memory).
fn write_nnef_to(model: &TypedModel, format: Format, file: &std::fs::File) -> TractResult<()> {
    let model = expand_gelu(model)?;
    let nnef = tract_nnef::nnef();
    let out = std::io::BufWriter::new(file);
    match format {
        Format::Onnx => bail!("ONNX output is written from the source ONNX file (model-slim slim)"),
        Format::NnefTar => {
            nnef.write_to_tar_with_config(&model, out, false, true)?
                .flush()?;
        }
        Format::NnefTgz => {
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            nnef.write_to_tar_with_config(&model, gz, false, true)?
                .finish()?
                .flush()?;
        }
    }
    Ok(())
}

/// What a written model is compared with once it is loaded back.
#[derive(Clone, Copy)]
pub struct ArtifactCheck<'a> {
    /// The outputs the file must compute (of the original, on seeded random inputs).
    pub expected: &'a Expected,
    /// Values of symbolic dimensions to run at.
    pub values: &'a SymbolValues,
    /// State the file's model cuts (see [`Expected::compare_cut`]).
    pub cuts: &'a [StateCut],
}

impl ArtifactCheck<'_> {
    /// Compares a model loaded from `file` with the expected outputs: an error when it does not
    /// run, the comparison otherwise.
    pub fn compare(&self, loaded: TypedModel, file: &Path) -> IoResult<Verification> {
        let mut v = self
            .expected
            .compare_cut(loaded, self.cuts)
            .map_err(|e| IoError::write(file, format!("the written file does not run: {e:#}")))?;
        v.artifact = Some(file.display().to_string());
        Ok(v)
    }
}

/// Saves a model as NNEF (the format follows the file name; `.onnx` needs the source file: see
/// [`crate::io::onnx::writeback::write_slimmed_onnx`]). The file is written beside the target, loaded back
/// by stock tract (`tract_nnef::nnef()`, nothing of model-slim registered), compared with
/// `check`'s reference when given, and only then renamed into place: a file that does not load
/// or does not match is not left behind. The model is taken, and dropped once written: it and
/// the file loaded back are never in memory together (a caller that keeps its model passes a
/// clone, which shares the weights). Returns the comparison.
pub fn write_model(
    model: TypedModel,
    path: &Path,
    check: Option<ArtifactCheck>,
) -> IoResult<Option<Verification>> {
    let fail = |e: &dyn std::fmt::Display| IoError::write(path, e);
    let format = Format::required(path)?;
    let scratch = scratch_beside(path).map_err(|e| fail(&e))?;
    write_nnef_to(&model, format, scratch.as_file()).map_err(|e| fail(&e))?;
    // The model in memory and the one loaded back are never held together.
    drop(model);
    let loaded = tract_nnef::nnef()
        .model_for_path(scratch.path())
        .and_then(|m| m.into_decluttered())
        .map_err(|e| fail(&format!("stock tract cannot load the written NNEF: {e:#}")))?;
    let verification = check.map(|c| c.compare(loaded, path)).transpose()?;
    if verification.as_ref().is_some_and(|v| !v.passed) {
        // The caller reports the difference; the file is not kept.
        return Ok(verification);
    }
    persist(scratch, path).map_err(|e| fail(&e))?;
    Ok(verification)
}
