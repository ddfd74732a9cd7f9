//! A user's Claude credential: its kinds, the safe hint shown back to the user, and the
//! environment variables that hand it to that user's child (DESIGN §3; the names are the ones
//! the Claude Code CLI reads).
//!
//! A [`Credential`] holds plaintext only between opening a sealed record and building a child's
//! environment. It zeroizes on drop, and its `Debug` prints only the kind.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// The record kind bound into the AAD of sealed credentials.
pub const SEAL_KIND: &str = "credential";

/// The kinds of credential, as shown in `authType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An Anthropic API key.
    ApiKey,
    /// Claude account sign-in tokens (OAuth 2.0).
    Oauth,
    /// A long-lived token from `claude setup-token`.
    SetupToken,
    /// Amazon Bedrock.
    Bedrock,
    /// Google Vertex AI.
    Vertex,
}

impl CredentialKind {
    /// The snake_case name used in `authType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Oauth => "oauth",
            Self::SetupToken => "setup_token",
            Self::Bedrock => "bedrock",
            Self::Vertex => "vertex",
        }
    }
}

/// A credential in plaintext. Serialized only into a sealed record.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// `ANTHROPIC_API_KEY`.
    ApiKey {
        /// The key, trimmed, byte-exact as the user gave it.
        key: String,
    },
    /// `CLAUDE_CODE_OAUTH_TOKEN` (RFC 6749 tokens).
    Oauth {
        /// The bearer access token.
        access_token: String,
        /// The refresh token, if the provider gave one.
        refresh_token: Option<String>,
        /// Unix seconds when the access token expires.
        expires_at: Option<i64>,
        /// Granted scopes.
        scopes: Vec<String>,
    },
    /// `CLAUDE_CODE_OAUTH_TOKEN`, from `claude setup-token`.
    SetupToken {
        /// The token.
        token: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential::{:?}([redacted])", self.kind())
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        match self {
            Self::ApiKey { key } => key.zeroize(),
            Self::Oauth {
                access_token,
                refresh_token,
                ..
            } => {
                access_token.zeroize();
                refresh_token.zeroize();
            }
            Self::SetupToken { token } => token.zeroize(),
        }
    }
}

impl Credential {
    /// Its kind.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Self::ApiKey { .. } => CredentialKind::ApiKey,
            Self::Oauth { .. } => CredentialKind::Oauth,
            Self::SetupToken { .. } => CredentialKind::SetupToken,
        }
    }

    /// A hint safe to show its owner: `sk-ant-…` plus the last 4 characters of the secret.
    pub fn hint(&self) -> String {
        let secret = match self {
            Self::ApiKey { key } => key,
            Self::Oauth { access_token, .. } => access_token,
            Self::SetupToken { token } => token,
        };
        hint_of(secret)
    }

    /// The environment variables that hand this credential to a child. Values zeroize on drop.
    pub fn env(&self) -> Vec<(&'static str, Zeroizing<String>)> {
        match self {
            Self::ApiKey { key } => vec![("ANTHROPIC_API_KEY", Zeroizing::new(key.clone()))],
            Self::Oauth { access_token, .. } => {
                vec![(
                    "CLAUDE_CODE_OAUTH_TOKEN",
                    Zeroizing::new(access_token.clone()),
                )]
            }
            Self::SetupToken { token } => {
                vec![("CLAUDE_CODE_OAUTH_TOKEN", Zeroizing::new(token.clone()))]
            }
        }
    }

    /// The sealed plaintext: this credential as JSON.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        // Serializing plain strings into a Vec cannot fail.
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses an opened record.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `sk-ant-…` plus the last 4 characters (or `…` plus them for other formats). Short secrets
/// show nothing of themselves.
pub fn hint_of(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    if secret.starts_with("sk-ant-") {
        format!("sk-ant-…{tail}")
    } else {
        format!("…{tail}")
    }
}

/// Why an API key was refused before any network call (`400 malformed_api_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    /// Nothing left after trimming.
    #[error("the API key is empty")]
    Empty,
    /// Longer than [`MAX_API_KEY_BYTES`].
    #[error("the API key is longer than 512 bytes; paste only the key")]
    TooLong,
    /// Whitespace inside the key.
    #[error("the API key contains whitespace; paste it as one unbroken string")]
    InnerWhitespace,
    /// Control or non-ASCII characters.
    #[error("the API key contains control or non-ASCII characters; paste only the key")]
    BadCharacters,
    /// An OAuth token (`sk-ant-oat…`) pasted where a key belongs.
    #[error(
        "this is a Claude OAuth token (sk-ant-oat…), not an API key; create an API key in the \
         Anthropic Console, or use the setup-token option if your operator enabled it"
    )]
    OauthToken,
}

/// Longest API key accepted, in bytes.
pub const MAX_API_KEY_BYTES: usize = 512;

/// Trims surrounding whitespace (a pasted `\r\n`) and checks the shape of an API key. Returns
/// the key byte-exact as it will be stored.
pub fn normalize_api_key(raw: &str) -> Result<&str, MalformedKey> {
    let key = raw.trim();
    if key.is_empty() {
        return Err(MalformedKey::Empty);
    }
    if key.len() > MAX_API_KEY_BYTES {
        return Err(MalformedKey::TooLong);
    }
    if key.chars().any(char::is_whitespace) {
        return Err(MalformedKey::InnerWhitespace);
    }
    if key.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(MalformedKey::BadCharacters);
    }
    if key.starts_with("sk-ant-oat") {
        return Err(MalformedKey::OauthToken);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_trimmed_and_checked() {
        assert_eq!(
            normalize_api_key("  sk-ant-api03-abc\r\n"),
            Ok("sk-ant-api03-abc")
        );
        assert_eq!(normalize_api_key(" \r\n"), Err(MalformedKey::Empty));
        assert_eq!(
            normalize_api_key("sk-ant api"),
            Err(MalformedKey::InnerWhitespace)
        );
        assert_eq!(
            normalize_api_key("sk-ant-\u{7}x"),
            Err(MalformedKey::BadCharacters)
        );
        assert_eq!(
            normalize_api_key("sk-ant-é"),
            Err(MalformedKey::BadCharacters)
        );
        assert_eq!(
            normalize_api_key("sk-ant-oat01-abcdef"),
            Err(MalformedKey::OauthToken)
        );
        assert_eq!(
            normalize_api_key(&"a".repeat(513)),
            Err(MalformedKey::TooLong)
        );
        assert!(normalize_api_key(&"a".repeat(512)).is_ok());
    }

    #[test]
    fn hints_show_only_the_tail() {
        assert_eq!(hint_of("sk-ant-api03-abcdefghWXYZ"), "sk-ant-…WXYZ");
        assert_eq!(hint_of("other-format-key-1234"), "…1234");
        assert_eq!(hint_of("short"), "…");
    }

    #[test]
    fn debug_and_env() {
        let c = Credential::ApiKey {
            key: "sk-ant-api03-secretsecret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
        let env = c.env();
        assert_eq!(env[0].0, "ANTHROPIC_API_KEY");
        assert_eq!(env[0].1.as_str(), "sk-ant-api03-secretsecret");
        let back = Credential::from_plaintext(&c.to_plaintext()).unwrap();
        assert_eq!(back, c);
    }
}
