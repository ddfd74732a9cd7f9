//! Claude account sign-in under way: the authorization code flow with PKCE (RFC 6749 §4.1,
//! RFC 7636), between `POST …/oauth/initiate` and the callback or the pasted `code#state`.
//!
//! Each started sign-in is an `oauth_pending` record keyed by its `state` (256 random bits),
//! bound to the user who started it, with the PKCE verifier sealed (kind `oauth_verifier`) and
//! an expiry of `oauth.state_ttl`. It lives in sled, so a daemon restart does not break a
//! sign-in under way. A `state` is used once: the first code to arrive claims it atomically
//! (`pending` → `exchanging`), and any later use is refused.

use std::sync::Arc;
use std::time::Duration;

use crate::anthropic::oauth::{OAuthError, OAuthProvider};
use crate::credential::{Credential, CredentialKeeper, RefreshError};
use crate::crypto::CryptoError;
use crate::store::{
    now, CredentialRecord, OAuthPendingRecord, PendingStatus, StoreError, Validation,
};

/// The AAD kind of a sealed PKCE verifier.
pub const VERIFIER_KIND: &str = "oauth_verifier";

/// Why a code could not be turned into a stored credential. Messages are for people and carry
/// no code, state, token or verifier.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No sign-in with this state.
    #[error("this sign-in is unknown; start again")]
    UnknownState,
    /// Its `oauth.state_ttl` passed.
    #[error("this sign-in expired; start again")]
    Expired,
    /// Its state was already used.
    #[error("this sign-in was already used; start again")]
    AlreadyUsed,
    /// Another user started it.
    #[error("this sign-in was started by another account")]
    OtherUser,
    /// The provider sent the user back with an error (RFC 6749 §4.1.2.1).
    #[error("the provider did not grant access: {0}")]
    Denied(String),
    /// The code exchange failed.
    #[error("the provider refused the code: {0}")]
    Exchange(OAuthError),
    /// The input is not `code#state`.
    #[error("paste the whole code shown by the provider, in the form code#state")]
    Malformed,
    /// Storage or sealing failed.
    #[error("the sign-in could not be stored")]
    Internal(String),
}

impl From<StoreError> for SignInError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<CryptoError> for SignInError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<RefreshError> for SignInError {
    fn from(e: RefreshError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl SignInError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownState => "unknown_state",
            Self::Expired => "state_expired",
            Self::AlreadyUsed => "state_used",
            Self::OtherUser => "unknown_state",
            Self::Denied(_) => "access_denied",
            Self::Exchange(OAuthError::InvalidGrant(_)) => "invalid_grant",
            Self::Exchange(_) => "exchange_failed",
            Self::Malformed => "malformed_code",
            Self::Internal(_) => "internal",
        }
    }
}

/// Where a sign-in is, for `GET …/oauth/status/{state}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignInStatus {
    /// `pending`, `completed`, `failed` or `expired`.
    pub status: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The sign-in service.
#[derive(Debug, Clone)]
pub struct SignIn {
    keeper: Arc<CredentialKeeper>,
    ttl: Duration,
}

impl SignIn {
    /// A service storing through `keeper`, with sign-ins valid for `ttl`.
    pub fn new(keeper: Arc<CredentialKeeper>, ttl: Duration) -> Self {
        Self { keeper, ttl }
    }

    fn provider(&self) -> Option<&Arc<OAuthProvider>> {
        self.keeper.oauth()
    }

    /// Whether a provider is configured.
    pub fn configured(&self) -> bool {
        self.provider().is_some()
    }

    /// Starts a sign-in for `user_id`: returns the authorization URL and the state.
    pub async fn initiate(
        &self,
        user_id: &str,
        store: &crate::store::Store,
    ) -> Result<(String, String), SignInError> {
        let provider = self
            .provider()
            .ok_or_else(|| SignInError::Internal("not configured".into()))?;
        let authorization = provider.authorize();
        let verifier = self.keeper.keyring().seal(
            user_id,
            VERIFIER_KIND,
            authorization.verifier.as_bytes(),
        )?;
        let record = OAuthPendingRecord {
            v: 1,
            user_id: user_id.to_owned(),
            verifier,
            created_at: now(),
            expires_at: now() + self.ttl.as_secs() as i64,
            status: PendingStatus::Pending,
            reason: None,
        };
        let state = authorization.state.clone();
        store.run(move |s| s.put_pending(&state, &record)).await?;
        crate::metrics::metrics()
            .oauth_signins
            .with_label_values(&["started"])
            .inc();
        tracing::info!(user_id, event = "signin_started", "oauth sign-in started");
        Ok((authorization.url, authorization.state))
    }

    /// Turns `code` for `state` into a stored credential. `expected_user` is the pasting user
    /// (paste mode); the callback has none, since the provider's redirect carries no cookie of
    /// ours (SameSite=Strict) and the state alone binds the sign-in to its user.
    pub async fn complete(
        &self,
        store: &crate::store::Store,
        state: &str,
        code: &str,
        expected_user: Option<&str>,
    ) -> Result<(String, CredentialRecord), SignInError> {
        let provider = self
            .provider()
            .ok_or_else(|| SignInError::Internal("not configured".into()))?;
        let key = state.to_owned();
        let Some(found) = store.run(move |s| s.pending(&key)).await? else {
            return Err(SignInError::UnknownState);
        };
        if expected_user.is_some_and(|u| u != found.user_id) {
            // Leave the state untouched: its owner can still finish.
            return Err(SignInError::OtherUser);
        }
        let key = state.to_owned();
        let claimed = match store.run(move |s| s.claim_pending(&key)).await? {
            None => return Err(SignInError::UnknownState),
            Some(Err(record)) if record.status == PendingStatus::Pending => {
                return Err(SignInError::Expired)
            }
            Some(Err(_)) => return Err(SignInError::AlreadyUsed),
            Some(Ok(record)) => record,
        };
        let user_id = claimed.user_id.clone();
        let result = async {
            let verifier =
                self.keeper
                    .keyring()
                    .open(&user_id, VERIFIER_KIND, &claimed.verifier)?;
            let verifier = String::from_utf8_lossy(&verifier).into_owned();
            let tokens = provider
                .exchange(code, &verifier)
                .await
                .map_err(SignInError::Exchange)?;
            let credential = Credential::from(&tokens);
            Ok::<_, SignInError>(
                self.keeper
                    .put(&user_id, &credential, Validation::Ok)
                    .await?,
            )
        }
        .await;
        let (status, reason) = match &result {
            Ok(_) => (PendingStatus::Completed, None),
            Err(e) => (PendingStatus::Failed, Some(e.to_string())),
        };
        let key = state.to_owned();
        store
            .run(move |s| s.finish_pending(&key, status, reason))
            .await?;
        let event = if result.is_ok() {
            "completed"
        } else {
            "failed"
        };
        crate::metrics::metrics()
            .oauth_signins
            .with_label_values(&[event])
            .inc();
        match &result {
            Ok(_) => tracing::info!(
                user_id,
                event = "signin_completed",
                "oauth sign-in completed"
            ),
            Err(e) => tracing::info!(
                user_id,
                event = "signin_failed",
                code = e.code(),
                "oauth sign-in failed"
            ),
        }
        result.map(|record| (user_id, record))
    }

    /// The provider sent the user back with `error` (RFC 6749 §4.1.2.1): the sign-in fails.
    pub async fn deny(
        &self,
        store: &crate::store::Store,
        state: &str,
        reason: String,
    ) -> Result<(), SignInError> {
        let key = state.to_owned();
        match store.run(move |s| s.claim_pending(&key)).await? {
            Some(Ok(record)) => {
                let key = state.to_owned();
                let why = reason.clone();
                store
                    .run(move |s| s.finish_pending(&key, PendingStatus::Failed, Some(why)))
                    .await?;
                crate::metrics::metrics()
                    .oauth_signins
                    .with_label_values(&["failed"])
                    .inc();
                tracing::info!(user_id = %record.user_id, event = "signin_failed", code = "access_denied", "oauth sign-in failed");
                Ok(())
            }
            Some(Err(record)) if record.status == PendingStatus::Pending => {
                Err(SignInError::Expired)
            }
            Some(Err(_)) => Err(SignInError::AlreadyUsed),
            None => Err(SignInError::UnknownState),
        }
    }

    /// The status of `state`, only for the user who started it (`None` otherwise).
    pub async fn status(
        &self,
        store: &crate::store::Store,
        state: &str,
        user_id: &str,
    ) -> Result<Option<SignInStatus>, StoreError> {
        let key = state.to_owned();
        let Some(record) = store.run(move |s| s.pending(&key)).await? else {
            return Ok(None);
        };
        if record.user_id != user_id {
            return Ok(None);
        }
        let status = match record.status {
            PendingStatus::Pending if record.expires_at <= now() => "expired",
            PendingStatus::Pending | PendingStatus::Exchanging => "pending",
            PendingStatus::Completed => "completed",
            PendingStatus::Failed => "failed",
        };
        Ok(Some(SignInStatus {
            status,
            reason: record.reason,
        }))
    }
}

/// Splits a pasted `code#state` (how the provider's code page shows it).
pub fn split_pasted(input: &str) -> Result<(&str, &str), SignInError> {
    let input = input.trim();
    let (code, state) = input.split_once('#').ok_or(SignInError::Malformed)?;
    let plain = |s: &str| {
        !s.is_empty() && s.len() <= 2048 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
    };
    if plain(code) && plain(state) {
        Ok((code, state))
    } else {
        Err(SignInError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_codes_split_at_the_hash() {
        assert_eq!(split_pasted(" abc#def \n").unwrap(), ("abc", "def"));
        assert!(split_pasted("abc").is_err());
        assert!(split_pasted("#def").is_err());
        assert!(split_pasted("a b#c").is_err());
        assert!(split_pasted("a#b#c").is_err());
    }
}
