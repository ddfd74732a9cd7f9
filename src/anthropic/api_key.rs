//! Checking an API key before it is stored: `GET {base_url}/v1/models` with `x-api-key` and
//! `anthropic-version: 2023-06-01` (Anthropic API reference, "List Models"), a request that
//! costs nothing and needs only a valid key.

use std::time::Duration;

use reqwest::StatusCode;

use super::UpstreamError;

/// The `anthropic-version` header value the check sends.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A key the API did not reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// 200: the key works.
    Valid,
    /// 429 or 529: rate limited or overloaded, which the API only says to a real key.
    RateLimited,
}

/// Checks `key` against `{base_url}/v1/models` within `timeout`.
///
/// Errors: 401 → [`UpstreamError::InvalidApiKey`], 403 → [`UpstreamError::ApiKeyForbidden`];
/// a timeout, network error, 5xx or any other status → [`UpstreamError::Unavailable`].
pub async fn validate_api_key(
    client: &reqwest::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
) -> Result<KeyCheck, UpstreamError> {
    let url = format!("{}/v1/models", base_url.trim_end_matches('/'));
    let mut key_header = reqwest::header::HeaderValue::from_str(key)
        .map_err(|_| UpstreamError::Unavailable("the key cannot be sent as a header".into()))?;
    key_header.set_sensitive(true);
    let response = client
        .get(&url)
        .header("x-api-key", key_header)
        .header("anthropic-version", ANTHROPIC_VERSION)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            // reqwest's error text can include the URL (never the key: it is in a header).
            let what = if e.is_timeout() {
                format!("no answer within {}", humantime::format_duration(timeout))
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                "network error".to_owned()
            };
            UpstreamError::Unavailable(what)
        })?;
    match response.status() {
        StatusCode::OK => Ok(KeyCheck::Valid),
        StatusCode::UNAUTHORIZED => Err(UpstreamError::InvalidApiKey),
        StatusCode::FORBIDDEN => Err(UpstreamError::ApiKeyForbidden),
        StatusCode::TOO_MANY_REQUESTS => Ok(KeyCheck::RateLimited),
        s if s.as_u16() == 529 => Ok(KeyCheck::RateLimited),
        s => Err(UpstreamError::Unavailable(format!(
            "the API answered {}",
            s.as_u16()
        ))),
    }
}
