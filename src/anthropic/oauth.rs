//! The OAuth 2.0 client for Claude account sign-in, with the `oauth2` crate: the authorization
//! request with PKCE (RFC 6749 §4.1.1, RFC 7636 §4.1–4.3, S256), the code exchange (RFC 6749
//! §4.1.3, RFC 7636 §4.5) and refresh (RFC 6749 §6).
//!
//! The provider is whatever the operator configures (`[oauth]`): a generic authorization
//! server. Requests use the daemon's HTTP client, which never follows redirects.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use zeroize::Zeroizing;

use crate::config::OAuthSettings;
use crate::store::now;

/// Bytes of randomness in a `state` (256 bits, as the issue asks; RFC 6749 §10.12 needs it
/// unguessable).
pub const STATE_BYTES: u32 = 32;

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why the OAuth provider cannot be used (configuration).
#[derive(Debug, thiserror::Error)]
pub enum OAuthConfigError {
    /// A URL does not parse.
    #[error("oauth.{0} is not a valid URL")]
    BadUrl(&'static str),
    /// The client secret file cannot be read.
    #[error("cannot read oauth.client_secret_file: {0}")]
    SecretFile(std::io::Error),
}

/// Why a token request failed. Messages carry no token, code or verifier.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_grant` (RFC 6749 §5.2): the code or refresh token is invalid, expired, revoked,
    /// reused, or the PKCE verifier does not match.
    #[error("the provider refused the grant (invalid_grant){}", .0.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    InvalidGrant(Option<String>),
    /// Another error answer of the token endpoint (`invalid_client`, `invalid_request`, …).
    #[error("the provider answered {code}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        /// The RFC 6749 §5.2 error code.
        code: String,
        /// `error_description`, if any.
        description: Option<String>,
    },
    /// Timeout, network error, or an answer that is not a token response.
    #[error("the provider could not be reached or answered unexpectedly ({0})")]
    Unavailable(String),
}

/// Tokens from a successful exchange or refresh.
pub struct TokenSet {
    /// The bearer access token.
    pub access_token: Zeroizing<String>,
    /// The refresh token, if one was issued (a refresh that issues none keeps the old one).
    pub refresh_token: Option<Zeroizing<String>>,
    /// Unix seconds when the access token expires (`expires_in` from now).
    pub expires_at: Option<i64>,
    /// Granted scopes (as requested when the provider does not say).
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A started authorization: the URL to open, its `state`, and the PKCE verifier to keep sealed.
pub struct Authorization {
    /// The authorization request URL (RFC 6749 §4.1.1).
    pub url: String,
    /// The `state` parameter: 256 random bits, base64url.
    pub state: String,
    /// The PKCE `code_verifier` (RFC 7636 §4.1).
    pub verifier: Zeroizing<String>,
}

/// The configured provider.
pub struct OAuthProvider {
    client: Client,
    scopes: Vec<String>,
    http: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl OAuthProvider {
    /// Builds the provider from `[oauth]`, or `None` when it is not configured (no authorize
    /// URL, token URL or client id). `default_redirect` is the callback URL used in `callback`
    /// mode when `oauth.redirect_uri` is unset.
    pub fn from_settings(
        settings: &OAuthSettings,
        default_redirect: &str,
        http: reqwest::Client,
    ) -> Result<Option<Self>, OAuthConfigError> {
        let (Some(auth), Some(token), Some(client_id)) = (
            &settings.authorize_url,
            &settings.token_url,
            &settings.client_id,
        ) else {
            return Ok(None);
        };
        let redirect = settings
            .redirect_uri
            .clone()
            .unwrap_or_else(|| default_redirect.to_owned());
        let mut client = BasicClient::new(ClientId::new(client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(auth.clone())
                    .map_err(|_| OAuthConfigError::BadUrl("authorize_url"))?,
            )
            .set_token_uri(
                TokenUrl::new(token.clone()).map_err(|_| OAuthConfigError::BadUrl("token_url"))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(redirect).map_err(|_| OAuthConfigError::BadUrl("redirect_uri"))?,
            );
        let secret = match (&settings.client_secret, &settings.client_secret_file) {
            (Some(secret), _) => Some(secret.expose().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(OAuthConfigError::SecretFile)?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        client = match secret {
            // A confidential client authenticates with HTTP Basic (RFC 6749 §2.3.1).
            Some(secret) => client
                .set_client_secret(ClientSecret::new(secret))
                .set_auth_type(AuthType::BasicAuth),
            // A public client sends its id in the body; PKCE protects the code.
            None => client.set_auth_type(AuthType::RequestBody),
        };
        Ok(Some(Self {
            client,
            scopes: settings.scopes.clone(),
            http,
            timeout: settings.timeout,
        }))
    }

    /// Starts an authorization: a fresh 256-bit `state` and an S256 PKCE pair.
    pub fn authorize(&self) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client
            .authorize_url(|| CsrfToken::new_random_len(STATE_BYTES))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            verifier: Zeroizing::new(verifier.secret().clone()),
        }
    }

    /// Exchanges an authorization code, proving possession of the verifier.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<TokenSet, OAuthError> {
        let request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        let response = self
            .within_timeout(request.request_async(&self.http))
            .await?;
        self.tokens(response, None)
    }

    /// Refreshes with `refresh_token`. A provider that rotates refresh tokens returns a new one
    /// (which the caller must store before using the access token).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, OAuthError> {
        let refresh = RefreshToken::new(refresh_token.to_owned());
        let request = self.client.exchange_refresh_token(&refresh);
        let response = self
            .within_timeout(request.request_async(&self.http))
            .await?;
        self.tokens(response, Some(refresh_token))
    }

    /// A token request bounded by `oauth.timeout`.
    async fn within_timeout<T>(
        &self,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, OAuthError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| {
                OAuthError::Unavailable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            })
    }

    fn tokens<RE: std::error::Error + 'static>(
        &self,
        response: Result<
            oauth2::basic::BasicTokenResponse,
            RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
        >,
        old_refresh: Option<&str>,
    ) -> Result<TokenSet, OAuthError> {
        let response = response.map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                let description = r.error_description().cloned();
                match r.error() {
                    BasicErrorResponseType::InvalidGrant => OAuthError::InvalidGrant(description),
                    other => OAuthError::Refused {
                        code: other.to_string(),
                        description,
                    },
                }
            }
            RequestTokenError::Request(_) => OAuthError::Unavailable("network error".into()),
            RequestTokenError::Parse(_, _) => {
                OAuthError::Unavailable("not a token response".into())
            }
            RequestTokenError::Other(s) => OAuthError::Unavailable(s),
        })?;
        let scopes = response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| self.scopes.clone());
        Ok(TokenSet {
            access_token: Zeroizing::new(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|t| Zeroizing::new(t.secret().clone()))
                .or_else(|| old_refresh.map(|t| Zeroizing::new(t.to_owned()))),
            expires_at: response.expires_in().map(|d| now() + d.as_secs() as i64),
            scopes,
        })
    }
}
