//! Mesh mode: continuous probing of peers. [`plan`] decides who pings whom (pure); [`peers`]
//! reads the peer sources (files through `peer_file.rs`, read defensively); [`trace_auto`]
//! traces the path to targets that turn lossy or dead, [`trace_export`] exports the paths.
pub mod check;
mod classic;
pub mod discovery;
pub mod fleet;
pub mod labels;
pub mod native;
pub mod page;
pub mod palette;
mod peer_file;
pub mod peers;
pub mod plan;
mod reorder;
pub mod runner;
mod scheduler;
pub mod stats;
pub mod stats_proto;
pub mod table;
pub mod targets;
pub mod tiered;
pub mod trace_auto;
pub mod trace_export;
pub mod view;
pub mod window;
