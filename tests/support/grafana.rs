//! Reads `config/grafana-dashboard.json`: every PromQL query in it (panel targets and the
//! templating variables' `label_values` selectors) and Grafana's variables replaced by values
//! Prometheus accepts, so tests can parse them with promtool and run them against a real server.

use serde_json::Value;

/// One query: where it is (panel title or variable name) and its PromQL.
pub struct DashboardQuery {
    pub place: String,
    pub expr: String,
}

pub fn load_dashboard() -> Value {
    let path = super::repo_path("config/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read grafana-dashboard.json");
    serde_json::from_str(&text).expect("grafana-dashboard.json is valid JSON")
}

/// Every panel, including those nested in collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels array") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested.iter());
        }
    }
    all
}

pub fn queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let mut found = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            found.push(DashboardQuery {
                place: format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                expr: expr.to_string(),
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating list")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .expect("query variable has a query");
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .unwrap_or_else(|| {
                panic!("variable query is not label_values(selector, label): {query}")
            });
        found.push(DashboardQuery {
            place: format!("variable {:?}", variable["name"].as_str().unwrap_or("?")),
            expr: selector.to_string(),
        });
    }
    found
}

/// The names of the dashboard's template variables.
pub fn variable_names(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// Replaces Grafana's variables: interval variables by `1m`, `label=~"$var"` and
/// `label="$var"` by a match-everything regex. Panics on a variable it does not know, so a new
/// one cannot slip past the checks unreplaced.
pub fn substitute(expr: &str, variables: &[String]) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for name in variables {
        for form in [format!("${{{name}}}"), format!("${name}")] {
            out = out
                .replace(&format!("=~\"{form}\""), "=~\".*\"")
                .replace(&format!("=\"{form}\""), "=~\".*\"");
        }
    }
    assert!(!out.contains('$'), "unreplaced variable in {out}");
    out
}
