//! The profilers' label slots, fed by the layer.

mod labels;
