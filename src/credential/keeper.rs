//! The one place that seals, stores, opens and refreshes users' credentials.
//!
//! Refresh is single-flight per user: concurrent callers (two sessions starting, the background
//! refresher) wait on one per-user lock, and whoever gets it second finds the fresh token
//! already stored and makes no request. A refreshed pair is sealed and flushed **before** the
//! new access token is handed to anyone, so a provider that rotates refresh tokens can never
//! leave us holding only a used one. A refresh that fails never deletes the credential:
//! `invalid_grant` marks it `needs_reauth`, and anything else leaves it untouched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Credential, CredentialKind, SEAL_KIND};
use crate::anthropic::oauth::{OAuthError, OAuthProvider};
use crate::crypto::{CryptoError, Keyring};
use crate::store::{now, CredentialRecord, Store, StoreError, Validation};

/// Why a refresh did not produce a fresh token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// No credential is stored.
    #[error("no credential is stored")]
    NoCredential,
    /// The credential is not an OAuth one, or has no refresh token.
    #[error("the credential cannot be refreshed")]
    NotRefreshable,
    /// No OAuth provider is configured.
    #[error("sign-in is not configured on this server")]
    NotConfigured,
    /// The provider refused the refresh token (`invalid_grant`): the user must sign in again.
    /// The credential is kept and marked `needs_reauth`.
    #[error("the sign-in expired or was revoked; sign in again")]
    InvalidGrant,
    /// The provider could not be reached or refused otherwise; the credential is untouched.
    #[error("could not refresh the sign-in: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sealed record did not open.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// See the module docs.
pub struct CredentialKeeper {
    store: Store,
    keyring: Arc<Keyring>,
    oauth: Option<Arc<OAuthProvider>>,
    /// Refresh when the access token expires within this many seconds (margin plus skew).
    refresh_window: i64,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for CredentialKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialKeeper")
            .field("oauth", &self.oauth.is_some())
            .finish_non_exhaustive()
    }
}

impl CredentialKeeper {
    /// A keeper over `store`; `refresh_window` is `oauth.refresh_margin + oauth.clock_skew`.
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        oauth: Option<Arc<OAuthProvider>>,
        refresh_window: std::time::Duration,
    ) -> Self {
        Self {
            store,
            keyring,
            oauth,
            refresh_window: refresh_window.as_secs() as i64,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The configured OAuth provider.
    pub fn oauth(&self) -> Option<&Arc<OAuthProvider>> {
        self.oauth.as_ref()
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Seals and stores `credential` for `user_id` (flushed), replacing any earlier one.
    pub async fn put(
        &self,
        user_id: &str,
        credential: &Credential,
        validation: Validation,
    ) -> Result<CredentialRecord, RefreshError> {
        let record = self.seal(user_id, credential, validation)?;
        let user = user_id.to_owned();
        Ok(self
            .store
            .run(move |s| s.put_credential(&user, record))
            .await?)
    }

    fn seal(
        &self,
        user_id: &str,
        credential: &Credential,
        validation: Validation,
    ) -> Result<CredentialRecord, CryptoError> {
        let sealed = self
            .keyring
            .seal(user_id, SEAL_KIND, &credential.to_plaintext())?;
        Ok(CredentialRecord {
            v: 1,
            kind: credential.kind(),
            hint: credential.hint(),
            validated_at: (validation != Validation::Unchecked).then(now),
            validation,
            needs_reauth: false,
            expires_at: credential.expires_at(),
            updated_at: now(),
            generation: 0,
            sealed,
        })
    }

    /// The stored record and its opened credential, if any.
    pub async fn open(
        &self,
        user_id: &str,
    ) -> Result<Option<(CredentialRecord, Credential)>, RefreshError> {
        let user = user_id.to_owned();
        let Some(record) = self.store.run(move |s| s.credential(&user)).await? else {
            return Ok(None);
        };
        let plain = self.keyring.open(user_id, SEAL_KIND, &record.sealed)?;
        let credential =
            Credential::from_plaintext(&plain).map_err(|_| CryptoError::Malformed("credential"))?;
        Ok(Some((record, credential)))
    }

    /// Whether an OAuth record's access token expires within the refresh window.
    pub fn expiring(&self, record: &CredentialRecord) -> bool {
        record.kind == CredentialKind::Oauth
            && record
                .expires_at
                .is_some_and(|at| at - now() <= self.refresh_window)
    }

    /// The credential a child should start with: opened, and refreshed first when it is an
    /// OAuth token about to expire. A refresh the provider cannot answer leaves a token that
    /// has not expired yet in use.
    pub async fn for_child(
        &self,
        user_id: &str,
    ) -> Result<Option<(CredentialRecord, Credential)>, RefreshError> {
        let Some((record, credential)) = self.open(user_id).await? else {
            return Ok(None);
        };
        if record.needs_reauth || !self.expiring(&record) {
            return Ok(Some((record, credential)));
        }
        match self.refresh(user_id, Some(record.generation)).await {
            Ok(_) => self.open(user_id).await,
            Err(RefreshError::Unavailable(reason))
                if record.expires_at.is_some_and(|at| at > now()) =>
            {
                tracing::warn!(user_id, %reason, "refresh failed; the token is still valid for now");
                Ok(Some((record, credential)))
            }
            Err(e) => Err(e),
        }
    }

    fn lock_for(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(user_id.to_owned()).or_default().clone()
    }

    /// Refreshes `user_id`'s OAuth token, one refresh at a time per user. `seen` is the record
    /// generation the caller found stale (`None`: refresh only if it is expiring); when the
    /// stored generation has moved on by the time the lock is held, someone else refreshed and
    /// nothing is sent. Returns the record now stored.
    pub async fn refresh(
        &self,
        user_id: &str,
        seen: Option<u64>,
    ) -> Result<CredentialRecord, RefreshError> {
        let lock = self.lock_for(user_id);
        let _held = lock.lock().await;
        let Some((record, credential)) = self.open(user_id).await? else {
            return Err(RefreshError::NoCredential);
        };
        let moved_on = match seen {
            Some(generation) => record.generation != generation,
            None => !self.expiring(&record),
        };
        if moved_on && !record.needs_reauth {
            return Ok(record);
        }
        let Credential::Oauth {
            refresh_token: Some(refresh_token),
            ..
        } = &credential
        else {
            return Err(RefreshError::NotRefreshable);
        };
        let provider = self.oauth.as_ref().ok_or(RefreshError::NotConfigured)?;
        match provider.refresh(refresh_token).await {
            Ok(tokens) => {
                let fresh = Credential::from(&tokens);
                let mut new = self.seal(user_id, &fresh, Validation::Ok)?;
                new.generation = record.generation + 1;
                let (user, expected, stored) = (user_id.to_owned(), record.clone(), new.clone());
                // Sealed and flushed before anyone uses the new access token; swapped only if
                // nobody replaced the credential meanwhile (a new key set by the user wins).
                let swapped = self
                    .store
                    .run(move |s| s.replace_credential(&user, &expected, &stored))
                    .await?;
                crate::metrics::metrics()
                    .oauth_refreshes
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(user_id, swapped, outcome = "ok", "oauth refresh");
                if swapped {
                    Ok(new)
                } else {
                    self.open(user_id)
                        .await?
                        .map(|(r, _)| r)
                        .ok_or(RefreshError::NoCredential)
                }
            }
            Err(OAuthError::InvalidGrant(_)) => {
                crate::metrics::metrics()
                    .oauth_refreshes
                    .with_label_values(&["invalid_grant"])
                    .inc();
                tracing::info!(user_id, outcome = "invalid_grant", "oauth refresh");
                let user = user_id.to_owned();
                self.store
                    .run(move |s| s.update_credential(&user, |r| r.needs_reauth = true))
                    .await?;
                Err(RefreshError::InvalidGrant)
            }
            Err(e) => {
                crate::metrics::metrics()
                    .oauth_refreshes
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(user_id, outcome = "failed", error = %e, "oauth refresh");
                Err(RefreshError::Unavailable(e.to_string()))
            }
        }
    }
}
