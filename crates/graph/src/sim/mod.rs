//! placeholder
pub struct GraphSim;
pub struct GraphSimConfig;
