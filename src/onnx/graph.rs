//! A small builder for ONNX graphs: unique value names, float32 and int8 initializers, cached constants
//! and nodes.
//!
//! What: keeps the nodes in the order they are added (so a graph built front to back is topologically
//! sorted, as ONNX requires) and the initializers beside them.
//!
//! Inputs: op types, input value names and attributes ([`attr_i`], [`attr_f`], [`attr_ints`]).
//! Outputs: [`GraphBuilder::finish`] gives a [`GraphProto`] once graph inputs and outputs are declared.
//!
//! Example:
//! ```
//! use coltrast::onnx::graph::{GraphBuilder, attr_i};
//! let mut g = GraphBuilder::new();
//! let w = g.weight("w", &[2, 2], vec![1.0, 0.0, 0.0, 1.0]);
//! let y = g.op("MatMul", &["x", &w], vec![], "y");
//! let z = g.op("Softmax", &[&y], vec![attr_i("axis", -1)], "z");
//! assert_eq!(g.node_count(), 2);
//! # let _ = z;
//! ```

use std::collections::{HashMap, HashSet};

use super::proto::{attribute_type, data_type, AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto};

pub fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: Some(v), r#type: attribute_type::INT, ..Default::default() }
}

pub fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: Some(v), r#type: attribute_type::FLOAT, ..Default::default() }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: attribute_type::INTS, ..Default::default() }
}

/// Accumulates nodes and initializers.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    used: HashSet<String>,
    constants: HashMap<String, String>,
    counter: usize,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A value name not used before, derived from `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        if self.used.insert(hint.to_string()) {
            return hint.to_string();
        }
        loop {
            self.counter += 1;
            let name = format!("{hint}_{}", self.counter);
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    /// Reserve a name that comes from outside (a graph input).
    pub fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// A float32 initializer (stored as raw little-endian bytes). Returns its value name.
    pub fn weight(&mut self, hint: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in &data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    /// An int8 initializer (weights quantised by the exporter). Returns its value name.
    pub fn weight_i8(&mut self, hint: &str, dims: &[usize], data: Vec<i8>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT8,
            name: name.clone(),
            raw_data: data.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        });
        name
    }

    /// An int64 constant tensor (shared between uses of the same value).
    pub fn const_i64(&mut self, dims: &[usize], vals: &[i64]) -> String {
        let key = format!("i64{dims:?}{vals:?}");
        if let Some(n) = self.constants.get(&key) {
            return n.clone();
        }
        let name = self.fresh("const_i64");
        let mut raw = Vec::with_capacity(vals.len() * 8);
        for v in vals {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        self.constants.insert(key, name.clone());
        name
    }

    /// A uint8 scalar constant (shared between uses of the same value), e.g. a quantisation zero point.
    pub fn scalar_u8(&mut self, v: u8) -> String {
        let key = format!("u8:{v}");
        if let Some(n) = self.constants.get(&key) {
            return n.clone();
        }
        let name = self.fresh("const_u8");
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: data_type::UINT8,
            name: name.clone(),
            raw_data: vec![v],
            ..Default::default()
        });
        self.constants.insert(key, name.clone());
        name
    }

    /// A float32 scalar constant (shared between uses of the same value).
    pub fn scalar(&mut self, v: f32) -> String {
        let key = format!("f32:{:08x}", v.to_bits());
        if let Some(n) = self.constants.get(&key) {
            return n.clone();
        }
        let name = self.fresh("const_f32");
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: v.to_le_bytes().to_vec(),
            ..Default::default()
        });
        self.constants.insert(key, name.clone());
        name
    }

    /// Add a node with one output named after `hint`; returns the output name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>, hint: &str) -> String {
        let out = self.fresh(hint);
        self.op_into(op_type, inputs, attrs, &out);
        out
    }

    /// Add a node whose single output has an exact name (a graph output).
    pub fn op_into(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>, output: &str) {
        self.used.insert(output.to_string());
        let name = format!("{op_type}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name,
            op_type: op_type.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Add a node with several outputs, one per hint (e.g. DynamicQuantizeLinear); returns their names.
    pub fn op_multi(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hints: &[&str],
    ) -> Vec<String> {
        let outputs: Vec<String> = hints.iter().map(|h| self.fresh(h)).collect();
        let name = format!("{op_type}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name,
            op_type: op_type.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        outputs
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn finish(self, name: &str, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.to_string(),
            initializer: self.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }
}
