//! Who is calling: the name of the token the guard accepted, for handlers that record who
//! changed something (overrides, audit details).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The caller of a request. The guard inserts it; a route without a token sees `anonymous`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    token: Option<Arc<str>>,
}

impl Caller {
    /// A caller holding the token named `name`.
    pub(crate) fn token(name: &str) -> Caller {
        Caller {
            token: Some(Arc::from(name)),
        }
    }

    /// Whether a valid token was presented.
    pub(crate) fn is_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token's name, or `anonymous`.
    pub(crate) fn name(&self) -> &str {
        self.token.as_deref().unwrap_or("anonymous")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Infallible> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}
