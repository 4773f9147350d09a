//! Mesh mode: continuous probing of peers. [`plan`] decides who pings whom (pure).
pub mod discovery;
pub mod fleet;
pub mod page;
pub mod palette;
pub mod peers;
pub mod plan;
pub mod runner;
mod scheduler;
pub mod stats;
pub mod table;
pub mod targets;
pub mod tiered;
pub mod view;
pub mod window;
