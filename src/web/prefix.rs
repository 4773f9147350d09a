//! `--web.external-url` and `--web.route-prefix`, with blackbox_exporter's rules: the route
//! prefix defaults to the external URL's path, every endpoint is served under it, and a request
//! outside it is redirected (302) to it. Links on meshprobe's pages start with the external
//! URL's path, so they also work behind a reverse proxy that strips the prefix.
//!
//! Owns parsing both flags and mapping a request path to the route inside the prefix. It knows
//! no routes itself ([`crate::http`] does).

/// The prefix routes are served under, and the base of links.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutePrefix {
    /// `""` for the root, else `/path` without a trailing slash.
    prefix: String,
    /// The external URL's path, `""` or `/path` without a trailing slash.
    link_base: String,
}

/// Where a request path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'a> {
    /// The route inside the prefix, starting with `/`.
    Route(&'a str),
    /// Outside the prefix: redirect to this location.
    Redirect(&'a str),
}

/// `/a/b/` → `/a/b`, `/` and `` → ``.
fn normalize(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// The path of an absolute `http(s)://host[:port][/path]` URL.
fn url_path(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("--web.external-url {url:?} must be an absolute http:// or https:// URL")
        })?;
    let (host, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(format!("--web.external-url {url:?} has no host"));
    }
    if path.contains(['?', '#']) {
        return Err(format!(
            "--web.external-url {url:?} must not have a query or fragment"
        ));
    }
    Ok(path)
}

impl RoutePrefix {
    /// From the two flags (either may be absent).
    pub fn new(external_url: Option<&str>, route_prefix: Option<&str>) -> Result<Self, String> {
        let link_base = match external_url {
            Some(url) => normalize(url_path(url)?),
            None => String::new(),
        };
        let prefix = match route_prefix {
            Some(prefix) => normalize(prefix),
            None => link_base.clone(),
        };
        Ok(RoutePrefix { prefix, link_base })
    }

    /// The route `path` asks for, or where to redirect it.
    pub fn route<'a>(&'a self, path: &'a str) -> Routed<'a> {
        if self.prefix.is_empty() {
            return Routed::Route(path);
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some("") => Routed::Route("/"),
            Some(rest) if rest.starts_with('/') => Routed::Route(rest),
            _ => Routed::Redirect(self.redirect_target()),
        }
    }

    fn redirect_target(&self) -> &str {
        &self.prefix
    }

    /// A link to `route` (`/metrics`) as a browser outside a proxy should follow it.
    pub fn link(&self, route: &str) -> String {
        format!("{}{route}", self.link_base)
    }

    /// The route prefix, `/` for the root (for the startup log).
    pub fn display(&self) -> &str {
        if self.prefix.is_empty() {
            "/"
        } else {
            &self.prefix
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_defaults_to_the_external_url_path() {
        let routes = RoutePrefix::new(Some("http://proxy.example:8080/bb/"), None).expect("ok");
        assert_eq!(routes.route("/bb/probe"), Routed::Route("/probe"));
        assert_eq!(routes.route("/bb"), Routed::Route("/"));
        assert_eq!(routes.route("/bb/"), Routed::Route("/"));
        assert_eq!(routes.route("/bbx/probe"), Routed::Redirect("/bb"));
        assert_eq!(routes.route("/"), Routed::Redirect("/bb"));
        assert_eq!(routes.link("/metrics"), "/bb/metrics");
        assert_eq!(routes.display(), "/bb");
    }

    #[test]
    fn explicit_prefix_wins_and_links_follow_the_external_url() {
        // A proxy that strips /public and forwards to /internal/.
        let routes =
            RoutePrefix::new(Some("https://example.org/public"), Some("/internal/")).expect("ok");
        assert_eq!(routes.route("/internal/metrics"), Routed::Route("/metrics"));
        assert_eq!(routes.link("/metrics"), "/public/metrics");
        let root = RoutePrefix::new(None, Some("/")).expect("ok");
        assert_eq!(root.route("/probe"), Routed::Route("/probe"));
        assert_eq!(root.display(), "/");
        assert_eq!(
            RoutePrefix::new(None, None).expect("ok"),
            RoutePrefix::default()
        );
    }

    #[test]
    fn external_url_must_be_absolute() {
        for bad in [
            "example.org/bb",
            "ftp://x/",
            "http:///bb",
            "http://x/bb?q=1",
        ] {
            assert!(RoutePrefix::new(Some(bad), None).is_err(), "{bad}");
        }
    }
}
