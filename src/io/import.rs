//! Import: an ONNX file becomes a typed, decluttered tract model.
//!
//! Input facts come from `--input NAME:DIM,...,TYPE` and symbol values from `--set SYM=VALUE`,
//! as in the tract command line; without them the model's own (possibly symbolic) shapes are used.

use crate::io::error::{IoError, IoResult};
use crate::model::state::{named_state_pairs, StateCut, StatePair};
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// A `--input NAME:DIM,...,TYPE` request.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// The model input's name.
    pub name: String,
    /// Dimensions as written: integers or symbol names.
    pub dims: Vec<String>,
    /// Its element type.
    pub datum_type: DatumType,
}

impl std::str::FromStr for InputSpec {
    type Err = IoError;
    fn from_str(spec: &str) -> IoResult<InputSpec> {
        let bad = |message: &str| IoError::InputSpec {
            spec: spec.to_string(),
            message: message.to_string(),
        };
        let (name, rest) = spec.rsplit_once(':').ok_or_else(|| bad("missing `:`"))?;
        let mut parts: Vec<&str> = rest.split(',').map(str::trim).collect();
        let ty = parts
            .pop()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("missing type"))?;
        let datum_type =
            parse_datum_type(ty).ok_or_else(|| bad(&format!("unknown type `{ty}`")))?;
        if name.is_empty() {
            return Err(bad("missing name"));
        }
        if parts.iter().any(|d| d.is_empty()) {
            return Err(bad("empty dimension"));
        }
        Ok(InputSpec {
            name: name.to_string(),
            dims: parts.iter().map(|d| d.to_string()).collect(),
            datum_type,
        })
    }
}

fn parse_datum_type(ty: &str) -> Option<DatumType> {
    Some(match ty {
        "f32" => f32::datum_type(),
        "f16" => f16::datum_type(),
        "f64" => f64::datum_type(),
        "i64" => i64::datum_type(),
        "i32" => i32::datum_type(),
        "i8" => i8::datum_type(),
        "u8" => u8::datum_type(),
        "bool" => bool::datum_type(),
        _ => return None,
    })
}

/// Parses `SYM=VALUE`.
pub fn parse_set(spec: &str) -> IoResult<(String, i64)> {
    let bad = || IoError::SetSpec {
        spec: spec.to_string(),
    };
    let (sym, value) = spec.split_once('=').ok_or_else(bad)?;
    let value: i64 = value.trim().parse().map_err(|_| bad())?;
    if sym.trim().is_empty() {
        return Err(bad());
    }
    Ok((sym.trim().to_string(), value))
}

/// How to read a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Facts for named inputs (`-i`).
    pub inputs: Vec<InputSpec>,
    /// Values of symbolic dimensions (`--set`).
    pub sets: Vec<(String, i64)>,
    /// Inputs and outputs that carry state besides those named as HF/optimum name them
    /// (`--state`): shape hints treat them as a generation step's cache.
    pub states: Vec<StatePair>,
}

impl ImportOptions {
    /// These options for the model `cuts` make of the one they were given for: the facts of
    /// its state inputs keep the kept slices only along the cut axis.
    pub fn with_cut_state(&self, cuts: &[StateCut]) -> ImportOptions {
        let mut options = self.clone();
        for cut in cuts {
            let spec = options.inputs.iter_mut().find(|s| s.name == cut.pair.input);
            if let Some(dim) = spec.and_then(|s| s.dims.get_mut(cut.axis)) {
                *dim = cut.kept.len().to_string();
            }
        }
        options
    }
}

/// The `--set` values as tract symbol values of `model` (for costing and running it).
pub fn symbol_values(model: &TypedModel, sets: &[(String, i64)]) -> SymbolValues {
    sets.iter().fold(SymbolValues::default(), |v, (s, x)| {
        v.with(&model.symbols.sym(s), *x)
    })
}

/// Reads, types and declutters an ONNX model.
pub fn import_onnx(path: &Path, options: &ImportOptions) -> IoResult<TypedModel> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| IoError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    // External data files are found relative to the model's directory.
    let model_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_str(),
        _ => Some("."),
    };
    import_proto_bytes(&bytes, &shown, model_dir, options)
}

/// Types and declutters an ONNX model held in memory; `shown` names it in errors, external
/// data is read from `model_dir`.
fn import_proto_bytes(
    bytes: &[u8],
    shown: &str,
    model_dir: Option<&str>,
    options: &ImportOptions,
) -> IoResult<TypedModel> {
    let shown = shown.to_string();
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true);
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| IoError::NotOnnx {
            path: shown.clone(),
            message: format!("{e:#}"),
        })?;
    if let Some((what, onnx_type)) = proto.graph.as_ref().and_then(unsupported_type) {
        return Err(IoError::UnsupportedType {
            path: shown,
            what,
            onnx_type,
        });
    }
    if proto.graph.as_ref().is_some_and(|g| g.output.is_empty()) {
        return Err(IoError::NotOnnx {
            path: shown,
            message: "the graph declares no outputs".into(),
        });
    }
    let not_onnx = |message: String| IoError::NotOnnx {
        path: shown.clone(),
        message,
    };
    let parsed = onnx
        .parse(&proto, model_dir)
        .map_err(|e| not_onnx(format!("{e:#}")))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(not_onnx(format!(
            "the graph reads tensors nothing defines: {}",
            parsed.unresolved_inputs.join(", ")
        )));
    }
    let mut model = parsed.model;
    apply_input_specs(&mut model, &shown, options)?;
    let declared = describe_inputs(&model);
    let outputs = output_labels(&model);
    let analysis_error = |e: TractError| IoError::Analysis {
        path: shown.clone(),
        message: format!("{e:#}"),
        hint: concrete_input_hint(&declared, &outputs, options),
    };
    let mut typed = model.into_typed().map_err(analysis_error)?;
    if !options.sets.is_empty() {
        let subs = options
            .sets
            .iter()
            .map(|(s, v)| (typed.symbols.sym(s), TDim::Val(*v)))
            .collect();
        typed = typed.set_symbols(&subs).map_err(analysis_error)?;
    }
    let decluttered = typed.into_decluttered().map_err(analysis_error)?;
    cumsum_over_integers(decluttered).map_err(analysis_error)
}

/// The first initializer, input or output of a type tract has no datum type for (bfloat16,
/// the float8 and 4-bit types), and that type's name: tract would refuse it with "Unknown
/// DatumType" deep in parsing.
fn unsupported_type(graph: &tract_onnx::pb::GraphProto) -> Option<(String, String)> {
    use tract_onnx::pb::tensor_proto::DataType;
    let unsupported = |code: i32| {
        let dt = DataType::try_from(code).ok()?;
        (dt != DataType::Undefined && DatumType::try_from(dt).is_err())
            .then(|| dt.as_str_name().to_lowercase())
    };
    let initializers = graph
        .initializer
        .iter()
        .map(|t| (format!("initializer `{}`", t.name), t.data_type));
    let values = graph.input.iter().chain(&graph.output).filter_map(|v| {
        let tract_onnx::pb::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
        Some((format!("`{}`", v.name), t.elem_type))
    });
    initializers
        .chain(values)
        .find_map(|(what, code)| unsupported(code).map(|ty| (what, ty)))
}

/// tract 0.23.9 types the position ids of dynamo exports (a `CumSum` over the attention mask,
/// RoBERTa/MPNet-style) as shape values (`TDim`) and then cannot evaluate `CumSum` on them ("TDim
/// is not a number"), so such models do not run at all. The sum is computed on `i64` instead,
/// cast from and back to `TDim`: the same values.
fn cumsum_over_integers(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::array::CumSum;
    use tract_onnx::tract_core::ops::cast::cast;
    let sums: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<CumSum>())
        .filter(|n| n.outputs[0].fact.datum_type == TDim::datum_type())
        .map(|n| n.id)
        .collect();
    for id in &sums {
        let node = model.node(*id).clone();
        let mut patch = TypedModelPatch::new(format!("{}: CumSum over i64", node.name));
        let input = patch.tap_model(&model, node.inputs[0])?;
        let name = &node.name;
        let wide = patch.wire_node(format!("{name}.i64"), cast(i64::datum_type()), &[input])?;
        let sum = patch.wire_node(format!("{name}.sum"), node.op.clone(), &wide)?;
        let back = patch.wire_node(format!("{name}.tdim"), cast(TDim::datum_type()), &sum)?;
        patch.shunt_outside(&model, OutletId::new(*id, 0), back[0])?;
        patch.apply(&mut model)?;
    }
    if sums.is_empty() {
        Ok(model)
    } else {
        model.into_compact()
    }
}

/// What tract infers about the tensors of an ONNX model, by tensor name.
#[derive(Clone, Debug, Default)]
pub struct TensorFacts {
    /// The shapes fully known.
    pub shapes: HashMap<String, TVec<TDim>>,
    /// The values of small integer tensors computed from constants and shapes (a `Slice`'s
    /// bounds TorchScript computes from its input's shape), cast to `i64`.
    pub values: HashMap<String, Vec<i64>>,
}

/// What tract infers about the tensors of an ONNX model, with the import options' input facts.
/// External data is read from `model_dir` into a model dropped before this returns, so a
/// caller that reads the weights into `proto` only afterwards never holds them twice.
pub fn tensor_facts(
    proto: &tract_onnx::pb::ModelProto,
    shown: &str,
    model_dir: Option<&str>,
    options: &ImportOptions,
) -> IoResult<TensorFacts> {
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true);
    let mut model = onnx
        .parse(proto, model_dir)
        .map_err(|e| IoError::NotOnnx {
            path: shown.to_string(),
            message: format!("{e:#}"),
        })?
        .model;
    apply_input_specs(&mut model, shown, options)?;
    model.analyse(false).map_err(|e| IoError::Analysis {
        path: shown.to_string(),
        message: format!("{e:#}"),
        hint: String::new(),
    })?;
    let mut facts = TensorFacts::default();
    for node in model.nodes() {
        for slot in 0..node.outputs.len() {
            let outlet = OutletId::new(node.id, slot);
            let (Some(label), Ok(fact)) = (model.outlet_label(outlet), model.outlet_fact(outlet))
            else {
                continue;
            };
            if let Some(shape) = fact.shape.concretize() {
                facts.shapes.insert(label.to_string(), shape);
            }
            if let Some(values) = fact.value.concretize().and_then(|v| small_integers(&v)) {
                facts.values.insert(label.to_string(), values);
            }
        }
    }
    Ok(facts)
}

/// The values of an integer tensor of at most 8 elements, as `i64`.
fn small_integers(tensor: &Tensor) -> Option<Vec<i64>> {
    let integer = tensor.datum_type().is_integer() || tensor.datum_type() == TDim::datum_type();
    if !integer || tensor.len() > 8 {
        return None;
    }
    let values = tensor.cast_to::<i64>().ok()?;
    Some(
        values
            .to_plain_array_view::<i64>()
            .ok()?
            .iter()
            .copied()
            .collect(),
    )
}

fn input_names(model: &InferenceModel) -> Vec<String> {
    model
        .input_outlets()
        .map(|o| o.iter().map(|o| model.node(o.node).name.clone()).collect())
        .unwrap_or_default()
}

/// The names of the model's outputs (their labels, or their nodes' names).
fn output_labels(model: &InferenceModel) -> Vec<String> {
    model
        .output_outlets()
        .map(|outlets| {
            outlets
                .iter()
                .map(|o| {
                    model
                        .outlet_label(*o)
                        .map(str::to_string)
                        .unwrap_or_else(|| model.node(o.node).name.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn apply_input_specs(
    model: &mut InferenceModel,
    path: &str,
    options: &ImportOptions,
) -> IoResult<()> {
    let names = input_names(model);
    for spec in &options.inputs {
        let ix =
            names
                .iter()
                .position(|n| *n == spec.name)
                .ok_or_else(|| IoError::UnknownInput {
                    path: path.to_string(),
                    name: spec.name.clone(),
                    known: names.join(", "),
                })?;
        let dims = spec
            .dims
            .iter()
            .map(|d| model.symbols.parse_tdim(d))
            .collect::<TractResult<TVec<TDim>>>()
            .map_err(|e| IoError::InputSpec {
                spec: spec.name.clone(),
                message: format!("{e:#}"),
            })?;
        let dims = substitute(&dims, model, &options.sets);
        set_input(model, ix, spec.datum_type, &dims)?;
    }
    // `--set` also makes the declared shapes of the other inputs concrete, before analysis: some
    // exports (TorchScript BERT) cannot be analysed with symbols at all.
    if !options.sets.is_empty() {
        for (ix, name) in names.iter().enumerate() {
            if options.inputs.iter().any(|s| s.name == *name) {
                continue;
            }
            let fact = model
                .input_fact(ix)
                .map_err(|e| IoError::Import {
                    message: format!("{e:#}"),
                })?
                .clone();
            if let (Some(dt), Some(shape)) = (fact.datum_type.concretize(), fact.shape.concretize())
            {
                let dims = substitute(&shape, model, &options.sets);
                set_input(model, ix, dt, &dims)?;
            }
        }
    }
    Ok(())
}

fn substitute(dims: &[TDim], model: &InferenceModel, sets: &[(String, i64)]) -> TVec<TDim> {
    let mut values = SymbolValues::default();
    for (s, v) in sets {
        values = values.with(&model.symbols.sym(s), *v);
    }
    dims.iter().map(|d| d.eval(&values)).collect()
}

fn set_input(model: &mut InferenceModel, ix: usize, dt: DatumType, dims: &[TDim]) -> IoResult<()> {
    model
        .set_input_fact(ix, InferenceFact::dt_shape(dt, dims))
        .map_err(|e| IoError::Import {
            message: format!("{e:#}"),
        })
}

/// An input as the model declares it: name, dimensions (as written: integers or symbols, read
/// while the model's symbols are alive) and type where known.
type DeclaredInput = (String, Option<Vec<String>>, Option<DatumType>);

/// The declared inputs, for hints.
fn describe_inputs(model: &InferenceModel) -> Vec<DeclaredInput> {
    input_names(model)
        .into_iter()
        .enumerate()
        .map(|(ix, name)| {
            let fact = model.input_fact(ix).ok();
            let shape = fact
                .and_then(|f| f.shape.concretize())
                .map(|dims| dims.iter().map(|d| d.to_string()).collect());
            let dt = fact.and_then(|f| f.datum_type.concretize());
            (name, shape, dt)
        })
        .collect()
}

/// Tokens in a hinted sequence.
const HINT_TOKENS: i64 = 128;

/// Suggests the `--input` flags that give every declared input a shape tract can analyse, one
/// value per symbol so that inputs agree: batch (axis 0) 1, lengths [`HINT_TOKENS`]. A
/// generation step (inputs that carry state, see [`named_state_pairs`], or given as state) is given one new
/// token and keeps its state's length symbolic, `past` (whatever the model names it), with a
/// mask over `past+1`: tract analyses that, and the slimmed model then runs at any length.
fn concrete_input_hint(
    declared: &[DeclaredInput],
    outputs: &[String],
    options: &ImportOptions,
) -> String {
    if !options.inputs.is_empty()
        || declared.iter().all(|(_, s, _)| {
            s.as_ref()
                .is_some_and(|s| s.iter().all(|d| d.parse::<i64>().is_ok()))
        })
    {
        return String::new();
    }
    let names: Vec<String> = declared.iter().map(|(name, _, _)| name.clone()).collect();
    let states: Vec<String> = named_state_pairs(&names, outputs)
        .into_iter()
        .chain(options.states.iter().cloned())
        .map(|pair| pair.input)
        .collect();
    // The state's symbolic length, from the first state input that has one.
    let past = declared
        .iter()
        .filter(|(name, _, _)| states.contains(name))
        .flat_map(|(_, shape, _)| shape.iter().flatten().skip(1))
        .find(|d| d.parse::<i64>().is_err())
        .cloned();
    let length = |name: &str, dim: &str| match &past {
        None => HINT_TOKENS.to_string(),
        Some(_) if states.iter().any(|s| s == name) => dim.to_string(),
        Some(past) if name.contains("mask") => format!("{past}+1"),
        Some(_) => "1".into(),
    };
    // The first input a symbol appears in decides its value.
    let mut values: HashMap<String, String> = HashMap::new();
    let flags: Vec<String> = declared
        .iter()
        .map(|(name, shape, dt)| {
            let dims: Vec<String> = shape
                .iter()
                .flatten()
                .enumerate()
                .map(|(axis, d)| match d.parse::<i64>() {
                    Ok(value) => value.to_string(),
                    Err(_) => {
                        let guess = if axis == 0 {
                            "1".into()
                        } else {
                            length(name, d)
                        };
                        values.entry(d.clone()).or_insert(guess).clone()
                    }
                })
                .collect();
            let ty = dt
                .map(|d| format!("{d:?}").to_lowercase())
                .unwrap_or_else(|| "f32".into());
            format!("-i {name}:{},{ty}", dims.join(","))
        })
        .collect();
    format!(
        ". Its symbolic input shapes may be the cause: give shapes tract can analyse, e.g. {}",
        flags.join(" ")
    )
}
