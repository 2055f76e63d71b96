//! The endpoint table: what the index, the console and the README check show.

use serde::Serialize;

use crate::seam::GoIndex;
use crate::security::Scope;

/// One row of the endpoint table: what the index, the console and the README check show.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouteRow {
    /// The HTTP method.
    pub(crate) method: String,
    /// The path.
    pub(crate) path: String,
    /// The scope needed on this server; `None` (JSON `"none"`) when it is open.
    #[serde(serialize_with = "scope_name")]
    pub(crate) scope: Option<Scope>,
    /// One line on what it gives.
    pub(crate) summary: String,
    /// Its line in Go's `/debug/pprof/` index, if it has one.
    #[serde(skip)]
    pub(crate) go: Option<GoIndex>,
    /// Whether its probe is compiled in.
    pub(crate) available: bool,
    /// The probe it belongs to.
    pub(crate) probe: &'static str,
    /// The cargo feature its probe needs, if any.
    pub(crate) feature: Option<&'static str>,
}

fn scope_name<S: serde::Serializer>(scope: &Option<Scope>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(scope.map_or("none", Scope::as_str))
}
