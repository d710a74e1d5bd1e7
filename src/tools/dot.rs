//! Graphviz DOT of tract models, for looking at what slimming did: each model becomes one
//! component (nodes prefixed with its label), constants are folded into the label of the node
//! that reads them, and edges carry tensor shapes.

use petgraph::dot::{Config, Dot};
use petgraph::graph::{Graph, NodeIndex};
use std::collections::HashMap;
use tract_core::internal::*;
use tract_core::ops::konst::Const;

fn shape(model: &TypedModel, outlet: OutletId) -> String {
    model
        .outlet_fact(outlet)
        .map(|f| format!("{:?}", f.shape))
        .unwrap_or_default()
}

fn add_model(
    graph: &mut Graph<String, String>,
    label: &str,
    model: &TypedModel,
) -> TractResult<()> {
    let mut index: HashMap<usize, NodeIndex> = HashMap::new();
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_is::<Const>() {
            continue;
        }
        let consts: Vec<String> = node
            .inputs
            .iter()
            .filter(|i| model.node(i.node).op_is::<Const>())
            .map(|i| format!("const {}", shape(model, *i)))
            .collect();
        let mut text = format!("{label}: {}\n{}", node.name, node.op.name());
        if !consts.is_empty() {
            text += &format!("\n{}", consts.join(", "));
        }
        let this = graph.add_node(text);
        index.insert(id, this);
        for input in &node.inputs {
            if let Some(&from) = index.get(&input.node) {
                graph.add_edge(from, this, shape(model, *input));
            }
        }
    }
    Ok(())
}

/// One DOT graph of the given labelled models.
pub fn to_dot(models: &[(&str, &TypedModel)]) -> TractResult<String> {
    let mut graph = Graph::new();
    for (label, model) in models {
        add_model(&mut graph, label, model)?;
    }
    Ok(
        format!("{}", Dot::with_config(&graph, &[Config::GraphContentOnly]))
            .lines()
            .fold(
                String::from("digraph {\n    node [shape=box];\n"),
                |acc, l| acc + l + "\n",
            )
            + "}\n",
    )
}
