//! A user's Claude credential: its kinds, the safe hint shown back to the user, the checks of
//! what a user submits, and the environment that hands it to that user's child (DESIGN §3; the
//! variable names are the ones the Claude Code CLI reads, checked against the 2.1.332 binary).
//!
//! A [`Credential`] holds plaintext only between opening a sealed record and building a child's
//! environment. It zeroizes on drop, and its `Debug` prints only the kind.

mod keeper;

pub use self::keeper::{CredentialKeeper, RefreshError};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// The record kind bound into the AAD of sealed credentials.
pub const SEAL_KIND: &str = "credential";

/// Where a Vertex service-account file is written, relative to the user's HOME (0600, removed
/// when the credential is deleted).
pub const VERTEX_CREDENTIALS_FILE: &str = ".config/sashad/vertex-service-account.json";

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
    /// Microsoft Foundry.
    Foundry,
}

impl CredentialKind {
    /// Whether this is a Claude subscription credential (behind `claude_auth.subscription_login`).
    pub fn is_subscription(self) -> bool {
        matches!(self, Self::Oauth | Self::SetupToken)
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
    /// `CLAUDE_CODE_USE_BEDROCK=1` with an access key pair.
    BedrockKeys {
        /// `AWS_REGION`.
        region: String,
        /// `AWS_ACCESS_KEY_ID`.
        access_key_id: String,
        /// `AWS_SECRET_ACCESS_KEY`.
        secret_access_key: String,
        /// `AWS_SESSION_TOKEN`.
        session_token: Option<String>,
    },
    /// `CLAUDE_CODE_USE_BEDROCK=1` with a Bedrock API key.
    BedrockToken {
        /// `AWS_REGION`.
        region: String,
        /// `AWS_BEARER_TOKEN_BEDROCK`.
        bearer_token: String,
    },
    /// `CLAUDE_CODE_USE_VERTEX=1`.
    Vertex {
        /// `ANTHROPIC_VERTEX_PROJECT_ID`.
        project_id: String,
        /// `CLOUD_ML_REGION`.
        region: String,
        /// The service-account key file's JSON, written 0600 into HOME for
        /// `GOOGLE_APPLICATION_CREDENTIALS`.
        service_account_json: String,
    },
    /// `CLAUDE_CODE_USE_FOUNDRY=1`.
    Foundry {
        /// `ANTHROPIC_FOUNDRY_RESOURCE`, or
        resource: Option<String>,
        /// `ANTHROPIC_FOUNDRY_BASE_URL`.
        base_url: Option<String>,
        /// `ANTHROPIC_FOUNDRY_API_KEY`.
        api_key: String,
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
            Self::BedrockKeys {
                secret_access_key,
                session_token,
                access_key_id,
                ..
            } => {
                secret_access_key.zeroize();
                session_token.zeroize();
                access_key_id.zeroize();
            }
            Self::BedrockToken { bearer_token, .. } => bearer_token.zeroize(),
            Self::Vertex {
                service_account_json,
                ..
            } => service_account_json.zeroize(),
            Self::Foundry { api_key, .. } => api_key.zeroize(),
        }
    }
}

impl From<&crate::anthropic::oauth::TokenSet> for Credential {
    /// The stored form of an exchange's or a refresh's tokens.
    fn from(tokens: &crate::anthropic::oauth::TokenSet) -> Self {
        Self::Oauth {
            access_token: tokens.access_token.to_string(),
            refresh_token: tokens.refresh_token.as_ref().map(|t| t.to_string()),
            expires_at: tokens.expires_at,
            scopes: tokens.scopes.clone(),
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
            Self::BedrockKeys { .. } | Self::BedrockToken { .. } => CredentialKind::Bedrock,
            Self::Vertex { .. } => CredentialKind::Vertex,
            Self::Foundry { .. } => CredentialKind::Foundry,
        }
    }

    /// A hint safe to show its owner: the tail of the secret, and non-secret settings.
    pub fn hint(&self) -> String {
        match self {
            Self::ApiKey { key } => hint_of(key),
            Self::Oauth { access_token, .. } => hint_of(access_token),
            Self::SetupToken { token } => hint_of(token),
            Self::BedrockKeys {
                region,
                access_key_id,
                ..
            } => {
                format!("{} ({region})", hint_of(access_key_id))
            }
            Self::BedrockToken {
                region,
                bearer_token,
            } => format!("{} ({region})", hint_of(bearer_token)),
            Self::Vertex {
                project_id,
                region,
                service_account_json,
            } => {
                let email = serde_json::from_str::<Value>(service_account_json)
                    .ok()
                    .and_then(|v| v["client_email"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                format!("{email} ({project_id}, {region})")
            }
            Self::Foundry {
                resource,
                base_url,
                api_key,
            } => {
                let target = resource.as_deref().or(base_url.as_deref()).unwrap_or("");
                format!("{} ({target})", hint_of(api_key))
            }
        }
    }

    /// The environment variables that hand this credential to a child whose HOME is `home`.
    /// Values zeroize on drop.
    pub fn env(&self, home: &Path) -> Vec<(&'static str, Zeroizing<String>)> {
        let v = |s: &str| Zeroizing::new(s.to_owned());
        match self {
            Self::ApiKey { key } => vec![("ANTHROPIC_API_KEY", v(key))],
            Self::Oauth { access_token, .. } => vec![("CLAUDE_CODE_OAUTH_TOKEN", v(access_token))],
            Self::SetupToken { token } => vec![("CLAUDE_CODE_OAUTH_TOKEN", v(token))],
            Self::BedrockKeys {
                region,
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let mut env = vec![
                    ("CLAUDE_CODE_USE_BEDROCK", v("1")),
                    ("AWS_REGION", v(region)),
                    ("AWS_ACCESS_KEY_ID", v(access_key_id)),
                    ("AWS_SECRET_ACCESS_KEY", v(secret_access_key)),
                ];
                if let Some(token) = session_token {
                    env.push(("AWS_SESSION_TOKEN", v(token)));
                }
                env
            }
            Self::BedrockToken {
                region,
                bearer_token,
            } => vec![
                ("CLAUDE_CODE_USE_BEDROCK", v("1")),
                ("AWS_REGION", v(region)),
                ("AWS_BEARER_TOKEN_BEDROCK", v(bearer_token)),
            ],
            Self::Vertex {
                project_id, region, ..
            } => vec![
                ("CLAUDE_CODE_USE_VERTEX", v("1")),
                ("CLOUD_ML_REGION", v(region)),
                ("ANTHROPIC_VERTEX_PROJECT_ID", v(project_id)),
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    v(&home.join(VERTEX_CREDENTIALS_FILE).to_string_lossy()),
                ),
            ],
            Self::Foundry {
                resource,
                base_url,
                api_key,
            } => {
                let mut env = vec![
                    ("CLAUDE_CODE_USE_FOUNDRY", v("1")),
                    ("ANTHROPIC_FOUNDRY_API_KEY", v(api_key)),
                ];
                if let Some(resource) = resource {
                    env.push(("ANTHROPIC_FOUNDRY_RESOURCE", v(resource)));
                }
                if let Some(url) = base_url {
                    env.push(("ANTHROPIC_FOUNDRY_BASE_URL", v(url)));
                }
                env
            }
        }
    }

    /// Files the child needs in its HOME (path relative to HOME, contents), written 0600.
    pub fn files(&self) -> Vec<(PathBuf, Zeroizing<Vec<u8>>)> {
        match self {
            Self::Vertex {
                service_account_json,
                ..
            } => vec![(
                PathBuf::from(VERTEX_CREDENTIALS_FILE),
                Zeroizing::new(service_account_json.as_bytes().to_vec()),
            )],
            _ => Vec::new(),
        }
    }

    /// When the access token expires (OAuth), in Unix seconds.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Self::Oauth { expires_at, .. } => *expires_at,
            _ => None,
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
    } else if secret.starts_with("AKIA") || secret.starts_with("ASIA") {
        format!("{}…{tail}", &secret[..4])
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

/// A visible-ASCII token of `min..=max` bytes with no whitespace, after trimming.
fn token(raw: &str, what: &str, min: usize, max: usize) -> Result<String, String> {
    let t = raw.trim();
    if t.len() < min || t.len() > max {
        return Err(format!("{what} must be {min} to {max} characters"));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} may hold only visible ASCII characters, without spaces"
        ));
    }
    Ok(t.to_owned())
}

/// A token from `claude setup-token`: `sk-ant-oat01-…`.
pub fn parse_setup_token(raw: &str) -> Result<Credential, String> {
    let t = token(raw, "the token", 20, 512)?;
    if !t.starts_with("sk-ant-oat") {
        return Err(
            "a setup token starts with sk-ant-oat (run `claude setup-token` to get one)".into(),
        );
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("a setup token holds only letters, digits, '-' and '_'".into());
    }
    Ok(Credential::SetupToken { token: t })
}

fn aws_region(raw: &str) -> Result<String, String> {
    let r = raw.trim();
    let parts: Vec<&str> = r.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if ok && r.len() <= 32 {
        Ok(r.to_owned())
    } else {
        Err(format!("{r:?} is not an AWS region like us-east-1"))
    }
}

/// What `POST /api/claude/auth/bedrock` accepts (camelCase JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BedrockInput {
    /// AWS region.
    pub region: String,
    /// Access key id (with `secret_access_key`).
    #[serde(default)]
    pub access_key_id: Option<Zeroizing<String>>,
    /// Secret access key.
    #[serde(default)]
    pub secret_access_key: Option<Zeroizing<String>>,
    /// Session token (temporary credentials).
    #[serde(default)]
    pub session_token: Option<Zeroizing<String>>,
    /// A Bedrock API key, instead of the key pair.
    #[serde(default)]
    pub bearer_token: Option<Zeroizing<String>>,
}

impl BedrockInput {
    /// Checks and converts.
    pub fn into_credential(self) -> Result<Credential, String> {
        let region = aws_region(&self.region)?;
        match (self.access_key_id, self.secret_access_key, self.bearer_token) {
            (Some(id), Some(secret), None) => {
                let access_key_id = token(&id, "accessKeyId", 16, 128)?;
                if !access_key_id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
                    return Err("accessKeyId holds only capital letters and digits (like AKIA…)".into());
                }
                let secret_access_key = token(&secret, "secretAccessKey", 16, 128)?;
                let session_token = self.session_token.map(|t| token(&t, "sessionToken", 16, 8192)).transpose()?;
                Ok(Credential::BedrockKeys { region, access_key_id, secret_access_key, session_token })
            }
            (None, None, Some(bearer)) if self.session_token.is_none() => {
                Ok(Credential::BedrockToken { region, bearer_token: token(&bearer, "bearerToken", 16, 8192)? })
            }
            _ => Err("give either accessKeyId and secretAccessKey (and optionally sessionToken), or bearerToken".into()),
        }
    }
}

/// What `POST /api/claude/auth/vertex` accepts (camelCase JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VertexInput {
    /// GCP project id.
    pub project_id: String,
    /// Region (`us-east5`, `europe-west1`, `global`).
    pub region: String,
    /// The service-account key file: a JSON string, or the JSON object itself.
    pub service_account_json: Value,
}

/// Largest service-account file accepted, in bytes.
pub const MAX_SERVICE_ACCOUNT_BYTES: usize = 16 * 1024;

impl VertexInput {
    /// Checks and converts: the file must be a service-account key with `type`,
    /// `project_id`, `private_key` and `client_email`.
    pub fn into_credential(self) -> Result<Credential, String> {
        let project_id = self.project_id.trim().to_owned();
        let ok_project = (6..=30).contains(&project_id.len())
            && project_id.starts_with(|c: char| c.is_ascii_lowercase())
            && project_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_project {
            return Err(format!("{project_id:?} is not a Google Cloud project id"));
        }
        let region = self.region.trim().to_owned();
        if region.is_empty()
            || region.len() > 32
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "{region:?} is not a Vertex AI region like us-east5 or global"
            ));
        }
        let text = match self.service_account_json {
            Value::String(s) => s,
            v @ Value::Object(_) => v.to_string(),
            _ => return Err("serviceAccountJson must be the key file's JSON".into()),
        };
        if text.len() > MAX_SERVICE_ACCOUNT_BYTES {
            return Err("serviceAccountJson is larger than 16 KiB".into());
        }
        let parsed: Value = serde_json::from_str(&text)
            .map_err(|_| "serviceAccountJson is not valid JSON".to_owned())?;
        if parsed["type"] != "service_account" {
            return Err(
                "serviceAccountJson must be a service-account key (\"type\": \"service_account\")"
                    .into(),
            );
        }
        for field in ["project_id", "private_key", "client_email"] {
            if parsed[field].as_str().is_none_or(str::is_empty) {
                return Err(format!("serviceAccountJson lacks {field:?}"));
            }
        }
        if !parsed["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
        {
            return Err("serviceAccountJson's private_key is not a PEM private key".into());
        }
        Ok(Credential::Vertex {
            project_id,
            region,
            service_account_json: text,
        })
    }
}

/// What `POST /api/claude/auth/foundry` accepts (camelCase JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FoundryInput {
    /// The Foundry resource name, or
    #[serde(default)]
    pub resource: Option<String>,
    /// the endpoint URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key.
    pub api_key: Zeroizing<String>,
}

impl FoundryInput {
    /// Checks and converts.
    pub fn into_credential(self) -> Result<Credential, String> {
        let resource = self
            .resource
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let base_url = self
            .base_url
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        match (&resource, &base_url) {
            (Some(r), None)
                if r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {}
            (None, Some(u))
                if u.starts_with("https://")
                    && u.len() <= 256
                    && !u.contains(char::is_whitespace) => {}
            _ => {
                return Err(
                    "give either resource (a Foundry resource name) or baseUrl (an https URL)"
                        .into(),
                )
            }
        }
        Ok(Credential::Foundry {
            resource,
            base_url,
            api_key: token(&self.api_key, "apiKey", 16, 512)?,
        })
    }
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
        assert_eq!(hint_of("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
    }

    #[test]
    fn debug_and_env() {
        let c = Credential::ApiKey {
            key: "sk-ant-api03-secretsecret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
        let env = c.env(Path::new("/home/u"));
        assert_eq!(env[0].0, "ANTHROPIC_API_KEY");
        assert_eq!(env[0].1.as_str(), "sk-ant-api03-secretsecret");
        let back = Credential::from_plaintext(&c.to_plaintext()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bedrock_input_is_one_of_two_forms() {
        let keys = BedrockInput {
            region: "us-east-1".into(),
            access_key_id: Some(Zeroizing::new("AKIAIOSFODNN7EXAMPLE".into())),
            secret_access_key: Some(Zeroizing::new(
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            )),
            session_token: None,
            bearer_token: None,
        }
        .into_credential()
        .unwrap();
        let names: Vec<&str> = keys.env(Path::new("/h")).iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "CLAUDE_CODE_USE_BEDROCK",
                "AWS_REGION",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"
            ]
        );
        assert_eq!(keys.hint(), "AKIA…MPLE (us-east-1)");
        let token = BedrockInput {
            region: "eu-central-1".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            bearer_token: Some(Zeroizing::new("ABSKQmVkcm9ja0FQSUtleS1example".into())),
        }
        .into_credential()
        .unwrap();
        assert!(token
            .env(Path::new("/h"))
            .iter()
            .any(|(k, _)| *k == "AWS_BEARER_TOKEN_BEDROCK"));
        let both = BedrockInput {
            region: "us-east-1".into(),
            access_key_id: Some(Zeroizing::new("AKIAIOSFODNN7EXAMPLE".into())),
            secret_access_key: None,
            session_token: None,
            bearer_token: Some(Zeroizing::new("x".repeat(20))),
        };
        assert!(both.into_credential().is_err());
        let bad_region = BedrockInput {
            region: "mars".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            bearer_token: Some(Zeroizing::new("x".repeat(20))),
        };
        assert!(bad_region.into_credential().unwrap_err().contains("region"));
    }

    #[test]
    fn vertex_needs_a_service_account_key() {
        let sa = serde_json::json!({
            "type": "service_account", "project_id": "my-project", "client_email": "sa@my-project.iam.gserviceaccount.com",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n"
        });
        let ok = VertexInput {
            project_id: "my-project".into(),
            region: "us-east5".into(),
            service_account_json: sa.clone(),
        }
        .into_credential()
        .unwrap();
        let env = ok.env(Path::new("/ws/users/u1"));
        assert!(env
            .iter()
            .any(|(k, v)| *k == "GOOGLE_APPLICATION_CREDENTIALS"
                && v.as_str() == "/ws/users/u1/.config/sashad/vertex-service-account.json"));
        assert_eq!(ok.files().len(), 1);
        assert_eq!(
            ok.hint(),
            "sa@my-project.iam.gserviceaccount.com (my-project, us-east5)"
        );
        let mut missing = sa.clone();
        missing.as_object_mut().unwrap().remove("private_key");
        let err = VertexInput {
            project_id: "my-project".into(),
            region: "us-east5".into(),
            service_account_json: missing,
        }
        .into_credential()
        .unwrap_err();
        assert!(err.contains("private_key"), "{err}");
        let err = VertexInput {
            project_id: "my-project".into(),
            region: "us-east5".into(),
            service_account_json: Value::String("{not json".into()),
        }
        .into_credential()
        .unwrap_err();
        assert!(err.contains("not valid JSON"));
    }

    #[test]
    fn setup_tokens_are_checked() {
        assert!(parse_setup_token("  sk-ant-oat01-abcdefghijklmnopqrstuvwxyz_-0123\n").is_ok());
        assert!(parse_setup_token("sk-ant-api03-abcdefghijklmnopqrstuvwxyz").is_err());
        assert!(parse_setup_token("sk-ant-oat01-has spaces in it 0123456").is_err());
    }
}
