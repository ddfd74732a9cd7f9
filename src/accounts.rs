//! sashad's own accounts: password hashing, login tokens, and login rate limits.
//!
//! - Passwords: argon2id with the `argon2` crate's defaults (RFC 9106, OWASP's m=19 MiB, t=2,
//!   p=1), stored as PHC strings. Hashing is CPU-bound, so callers run it on the blocking pool.
//! - Tokens: 256 random bits, base64url (43 characters). Only their SHA-256 is stored, so a copy
//!   of the database does not let anyone log in; lookup by hash is a keyed read, with no
//!   byte-by-byte comparison of secrets.
//! - Rate limits: GCRA (the `governor` crate) keyed by username and by client address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Longest username, in bytes.
pub const MAX_USERNAME_LEN: usize = 64;
/// Longest password accepted, in bytes (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a PHC string. A malformed hash counts as a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Spends the same work as a real check when the username does not exist, so response time
/// does not tell which usernames are registered.
pub fn verify_against_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("sashad-dummy-password").unwrap_or_default());
    let _ = verify_password(password, phc);
}

/// A new login token (256 random bits, base64url) and the SHA-256 under which it is stored.
pub fn new_token() -> (Zeroizing<String>, [u8; 32]) {
    let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
    let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_slice()));
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 of a presented token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks a username: 1 to 64 characters from `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn validate_username(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_USERNAME_LEN {
        return Err("a username has 1 to 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("a username may hold only letters, digits, '.', '_' and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("a username starts with a letter or digit");
    }
    Ok(())
}

/// Checks a password's length against `min` characters and [`MAX_PASSWORD_LEN`] bytes.
pub fn validate_password(password: &str, min: usize) -> Result<(), String> {
    if password.chars().count() < min {
        return Err(format!("a password has at least {min} characters"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!("a password has at most {MAX_PASSWORD_LEN} bytes"));
    }
    Ok(())
}

/// Login attempt limits per username and per client address.
pub struct LoginLimiter {
    by_name: DefaultKeyedRateLimiter<String>,
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimiter")
    }
}

impl LoginLimiter {
    /// Allows `per_name` and `per_ip` attempts a minute, each also as the burst.
    pub fn new(per_name: u32, per_ip: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            by_name: RateLimiter::keyed(quota(per_name)),
            by_ip: RateLimiter::keyed(quota(per_ip)),
        }
    }

    /// Counts one attempt. `Err(wait)` when either limit is spent: the client may retry after
    /// `wait`.
    pub fn check(&self, username: &str, ip: IpAddr) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        let ip_result = self.by_ip.check_key(&ip);
        let name_result = self.by_name.check_key(&username.to_lowercase());
        let wait = [ip_result.err(), name_result.err()]
            .into_iter()
            .flatten()
            .map(|not_until| not_until.wait_time_from(now))
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Forgets idle keys, so the limiter's memory follows recent traffic only.
    pub fn retain_recent(&self) {
        self.by_name.retain_recent();
        self.by_ip.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_are_256_bits_and_stored_as_hashes() {
        let (token, hash) = new_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(token.as_bytes()).unwrap().len(), 32);
        assert_eq!(token_hash(&token), hash);
        let (other, _) = new_token();
        assert_ne!(*token, *other);
    }

    #[test]
    fn usernames_are_checked() {
        assert!(validate_username("alice.b-1_x").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("-alice").is_err());
        assert!(validate_username("al ice").is_err());
        assert!(validate_username("../x").is_err());
        assert!(validate_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn limiter_refuses_after_the_burst_with_a_wait() {
        let limiter = LoginLimiter::new(3, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check("Alice", ip).is_ok());
        }
        let wait = limiter.check("alice", ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(
            limiter.check("bob", ip).is_ok(),
            "other usernames are not affected"
        );
    }
}
