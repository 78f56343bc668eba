//! cgc-core: the pure sync core of crm-graph-connector. Canonical model, field mapping and
//! reconciliation: values in, decisions out. No I/O, no clocks, no randomness.

pub mod mapping;
pub mod model;
pub mod reconcile;
pub mod series;

pub use mapping::{
    MapContext, MapError, from_crm, from_graph, project_crm, project_graph, to_crm, to_graph,
};
pub use model::normalize::{ValueError, normalize_value};
pub use model::{Canonical, CrmFields, Entity, FieldKind, UnknownEntity};
pub use reconcile::*;
