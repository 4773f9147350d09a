//! The hook context: the environment, the hook tools, the unit's paths and cache, and the few
//! operations every handler needs on them (the config, the units as the cache knows them, and
//! relation writes that skip unchanged keys).
//!
//! Owns no policy: what a hook does lives in `hooks.rs` (handlers), `leader.rs` (leader
//! publishing) and `actions.rs`. Those modules depend on this one, never the other way round.

use std::collections::BTreeMap;

use serde_json::Value;

use super::cos::Topology;
use super::env::JujuEnv;
use super::model::CharmConfig;
use super::publish::{JobInput, PlanRules, UnitData};
use super::state::{Cache, Paths};
use super::tools::HookTools;

/// The peer relation's endpoint name.
pub const PEER_ENDPOINT: &str = "mesh";

/// Everything a handler needs.
pub struct HookContext<'a> {
    pub env: &'a JujuEnv,
    pub tools: &'a dyn HookTools,
    pub paths: Paths,
    pub cache: Cache,
}

impl HookContext<'_> {
    /// The config from the cache, or from `config-get` when the cache has none.
    pub fn config(&mut self) -> Result<CharmConfig, String> {
        if let Some(config) = &self.cache.config {
            return Ok(config.clone());
        }
        self.refresh_config()
    }

    pub fn refresh_config(&mut self) -> Result<CharmConfig, String> {
        let values = self.tools.config_get().map_err(|e| e.to_string())?;
        let config = CharmConfig::from_values(&values)?;
        self.cache.config = Some(config.clone());
        Ok(config)
    }

    /// What this unit's jobs are computed from: the config, the units and the topology.
    pub fn job_input(&mut self) -> Result<JobInput, String> {
        let config = self.config()?;
        Ok(JobInput {
            mode: config.mode,
            port: config.port,
            units: self.units(),
            rules: self.plan_rules(&config),
            topology: Topology::from_env(self.env),
        })
    }

    /// How plans are made here: the config's networks and grouping, and this machine's routes.
    pub fn plan_rules(&self, config: &CharmConfig) -> PlanRules {
        PlanRules {
            selectors: config.selectors(),
            paths: config.tier_paths(),
            has_route: crate::mesh::discovery::has_route,
        }
    }

    /// This unit's group, as shared in its bag (`None` without grouping).
    pub fn own_group(&self) -> Option<String> {
        let config = self.cache.config.as_ref()?;
        config.own_group(self.env.availability_zone.as_deref())
    }

    /// Every unit's data as the cache knows it, this unit included.
    pub fn units(&self) -> BTreeMap<String, UnitData> {
        let mut units: BTreeMap<String, UnitData> = self
            .cache
            .peers
            .iter()
            .filter(|(_, record)| record.problem.is_none())
            .map(|(name, record)| {
                let data = UnitData {
                    networks: record.networks.clone(),
                    exporter: record.exporter.clone(),
                    group: record.group.clone(),
                };
                (name.clone(), data)
            })
            .collect();
        units.insert(
            self.env.unit.clone(),
            UnitData {
                networks: self.cache.own_networks.clone(),
                exporter: self.cache.own_exporter.clone(),
                group: self.own_group(),
            },
        );
        units
    }

    /// Writes `values` into this unit's (or, with `app`, the application's) bag on
    /// `relation_id`, skipping keys whose last written value is the same.
    pub fn set_if_changed(
        &mut self,
        relation_id: &str,
        values: BTreeMap<String, String>,
        app: bool,
    ) -> Result<bool, String> {
        let scope = if app { "app" } else { "unit" };
        let changed: BTreeMap<String, String> = values
            .into_iter()
            .filter(|(key, value)| {
                self.cache
                    .written
                    .get(&format!("{relation_id} {scope} {key}"))
                    != Some(value)
            })
            .collect();
        if changed.is_empty() {
            return Ok(false);
        }
        self.tools
            .relation_set(relation_id, &changed, app)
            .map_err(|e| e.to_string())?;
        for (key, value) in changed {
            self.cache
                .written
                .insert(format!("{relation_id} {scope} {key}"), value);
        }
        Ok(true)
    }
}

impl HookContext<'_> {
    /// Whether every expected peer has arrived and shared its networks (probe mode only).
    pub fn peers_settled(&self) -> Result<bool, String> {
        let goal = self.tools.goal_state().map_err(|e| e.to_string())?;
        let coming = |status: Option<&str>| matches!(status, Some("allocating" | "waiting"));
        if let Some(units) = goal.get("units").and_then(Value::as_object)
            && units
                .values()
                .any(|u| coming(u.get("status").and_then(Value::as_str)))
        {
            return Ok(false);
        }
        let peers = goal
            .get("relations")
            .and_then(|r| r.get(PEER_ENDPOINT))
            .and_then(Value::as_object);
        // Real Juju's goal-state may list neither peers nor subordinate units; then the cache is
        // the only evidence: every peer that has joined must have shared its networks.
        let pending = self
            .cache
            .peers
            .values()
            .any(|record| record.networks.is_empty() && record.problem.is_none());
        if pending {
            return Ok(false);
        }
        for (unit, state) in peers.into_iter().flatten() {
            if unit == &self.env.unit
                || !unit.contains('/')
                || state.get("status").and_then(Value::as_str) == Some("dying")
            {
                continue;
            }
            let shared = self
                .cache
                .peers
                .get(unit)
                .is_some_and(|record| !record.networks.is_empty() || record.problem.is_some());
            if !shared {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The relation ids of `endpoint` this unit has learned (from relation hooks or a rebuild).
    pub fn cache_relations(&self, endpoint: &str) -> Option<Vec<String>> {
        self.cache.relations.get(endpoint).cloned()
    }
}
