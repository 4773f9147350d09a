//! meshprobe: a blackbox_exporter-compatible ICMP exporter built on one shared socket per family.
pub mod icmp;
