//! The Juju hook environment: which hook or action runs, for which unit, relation and remote
//! unit. Read once from the `JUJU_*` variables; nothing else in the charm reads the environment.

use std::path::PathBuf;

/// The parts of the hook environment the charm uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JujuEnv {
    /// Hook name (`mesh-relation-changed`) or action name (`show-targets`).
    pub hook: String,
    pub is_action: bool,
    pub unit: String,
    pub app: String,
    pub model: String,
    pub model_uuid: String,
    pub charm_dir: PathBuf,
    /// Endpoint of a relation hook (`mesh`).
    pub relation: Option<String>,
    /// `mesh:7`.
    pub relation_id: Option<String>,
    /// Empty in `-created` and app-bag `-changed` hooks: then `None`.
    pub remote_unit: Option<String>,
    pub departing_unit: Option<String>,
    /// `JUJU_AVAILABILITY_ZONE` (present in every hook where the cloud has zones).
    pub availability_zone: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl JujuEnv {
    /// Reads the environment; `None` when this is not a Juju hook or action.
    pub fn from_env() -> Option<Result<JujuEnv, String>> {
        let dispatch = var("JUJU_DISPATCH_PATH")?;
        Some(Self::parse(&dispatch))
    }

    fn parse(dispatch: &str) -> Result<JujuEnv, String> {
        let (kind, name) = dispatch.rsplit_once('/').ok_or_else(|| {
            format!("JUJU_DISPATCH_PATH {dispatch:?} is not hooks/<name> or actions/<name>")
        })?;
        let is_action = kind.ends_with("actions");
        let unit = var("JUJU_UNIT_NAME").ok_or("JUJU_UNIT_NAME is not set")?;
        let app = unit.split('/').next().unwrap_or(&unit).to_string();
        Ok(JujuEnv {
            hook: name.to_string(),
            is_action,
            app,
            unit,
            model: var("JUJU_MODEL_NAME").unwrap_or_default(),
            model_uuid: var("JUJU_MODEL_UUID").unwrap_or_default(),
            charm_dir: var("JUJU_CHARM_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from),
            relation: var("JUJU_RELATION"),
            relation_id: var("JUJU_RELATION_ID"),
            remote_unit: var("JUJU_REMOTE_UNIT"),
            departing_unit: var("JUJU_DEPARTING_UNIT"),
            availability_zone: var("JUJU_AVAILABILITY_ZONE"),
        })
    }
}
