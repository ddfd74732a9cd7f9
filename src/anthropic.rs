//! Calls to upstream services with `reqwest`: the API-key check against the Anthropic API.
//!
//! The client never follows redirects (a redirect could carry a key to another host) and never
//! logs headers.

mod api_key;
pub mod oauth;

pub use self::api_key::{validate_api_key, KeyCheck};

use std::time::Duration;

/// Why an upstream call did not give a usable answer. Messages are for people and carry no
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The API answered 401 to a key check.
    #[error("Anthropic rejected this API key (401); check that you copied the whole key and that it is not revoked")]
    InvalidApiKey,
    /// The API answered 403 to a key check.
    #[error("this API key is not allowed to use the API (403); check its workspace and permissions in the Anthropic Console")]
    ApiKeyForbidden,
    /// Timeout, 5xx, network failure, or an unexpected status: the key was neither accepted
    /// nor rejected, and nothing was stored.
    #[error("could not check the key with Anthropic right now ({0}); nothing was stored, try again later")]
    Unavailable(String),
    /// The OAuth provider could not be reached during a code exchange.
    #[error("{0}")]
    OAuthUnavailable(String),
}

/// The HTTP client for upstream calls: rustls, no redirects, a connect timeout.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("sashad/", env!("CARGO_PKG_VERSION")))
        .build()
}
