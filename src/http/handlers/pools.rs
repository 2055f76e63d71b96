//! `GET /debug/pools`: every registered connection pool.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;

/// Each pool's numbers, utilisation and `saturated` flag, sorted by name.
pub async fn pools(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(report(&shared)))
}

/// The `/debug/pools` body (also a part of the bundle).
pub fn report(shared: &Shared) -> serde_json::Value {
    let pools: Vec<_> = shared
        .probes
        .pools
        .snapshot()
        .into_iter()
        .map(|(name, s)| {
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["name"] = name.into();
            v["utilisation"] = s.utilisation().into();
            v["saturated"] = s.saturated().into();
            v
        })
        .collect();
    serde_json::json!({ "pools": pools })
}
