//! Mesh mode: continuous probing of peers. [`plan`] decides who pings whom (pure).
pub mod discovery;
pub mod plan;
