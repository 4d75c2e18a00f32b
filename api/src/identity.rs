//! Who is calling: roles, the authenticated [`Caller`], passwords (argon2id)
//! and bearer tokens (random, stored only as SHA-256).
//!
//! A request's identity comes from one place, [`authenticate`]: a bearer
//! token is looked up by its digest among live credentials of enabled
//! accounts. Handlers only ever see the resulting [`Caller`]. An OIDC
//! identity provider would be a second way to produce a `Caller` (claims →
//! role and officer id) beside this one; handlers and [`crate::scope`] would
//! not change.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::fmt;

/// What a user may do (see ARCHITECTURE.md, "The officer API", for the table).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Their own caseload only.
    Officer,
    /// The caseloads of the officers they supervise, and their own.
    Supervisor,
    /// The duty desk: every alert, acting on it; every subject, read-only.
    Duty,
    /// Agency configuration: users and their credentials. No caseload data.
    Admin,
    /// The audit log, read-only. No caseload data.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Officer,
        Role::Supervisor,
        Role::Duty,
        Role::Admin,
        Role::Auditor,
    ];

    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Supervisor => "supervisor",
            Role::Duty => "duty",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// The role with this label.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Holds a caseload (and so needs an officer id).
    pub fn holds_caseload(self) -> bool {
        matches!(self, Role::Officer | Role::Supervisor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `users.id`: the actor recorded on every change.
    pub user: i64,
    /// The login name.
    pub username: String,
    /// The role.
    pub role: Role,
    /// The officer whose caseload the user holds (officers, supervisors).
    pub officer: Option<i64>,
    /// The credential used (`credentials.id`).
    pub credential: i64,
    /// Whether that credential is a login session (else an API token).
    pub session: bool,
}

/// A new bearer token: `emt_` and 64 hex digits (256 random bits). Only its
/// digest is stored.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let mut s = String::with_capacity(68);
    s.push_str("emt_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A token's stored digest.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Why a password was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakPassword(pub String);

impl fmt::Display for WeakPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WeakPassword {}

/// The shortest password taken (NIST SP 800-63B asks for at least 8; an
/// account that reads location data of people under supervision gets 12).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// An argon2id hash (PHC string) of `password`, with a random salt, at the
/// crate's default cost (19 MiB, 2 passes: OWASP's minimum for argon2id).
pub fn hash_password(password: &str) -> Result<String, WeakPassword> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(WeakPassword(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters (this one has {n})"
        )));
    }
    if n > 1024 {
        return Err(WeakPassword(
            "a password has at most 1024 characters".into(),
        ));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| WeakPassword(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the stored `hash`. A stored value that is not
/// a PHC string is logged and matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash is not a PHC string");
            false
        }
    }
}

/// A hash to verify against when the user is unknown, so that an unknown
/// name costs as long as a wrong password.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password never used").unwrap_or_default())
}

/// The caller behind `token`: a live credential (not revoked, not expired)
/// of an enabled account; `None` otherwise. Marks the credential used.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Caller>, sqlx::Error> {
    let row: Option<(i64, String, String, Option<i64>, i64, String)> = sqlx::query_as(
        "UPDATE credentials c SET last_used_at = now() \
         FROM users u \
         WHERE c.token_sha256 = $1 AND u.id = c.user_id AND c.revoked_at IS NULL \
           AND c.expires_at > now() AND u.disabled_at IS NULL \
         RETURNING u.id, u.username, u.role, u.officer_id, c.id, c.kind",
    )
    .bind(token_digest(token))
    .fetch_optional(pool)
    .await?;
    let Some((user, username, role, officer, credential, kind)) = row else {
        return Ok(None);
    };
    let role = Role::from_name(&role).ok_or_else(|| {
        sqlx::Error::Decode(format!("users.role of user {user} is {role:?}, not a role").into())
    })?;
    Ok(Some(Caller {
        user,
        username,
        role,
        officer,
        credential,
        session: kind == "session",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").expect("hashes");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("anything", "not a hash"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 68);
        assert_eq!(token_digest(&a).len(), 32);
        assert_ne!(token_digest(&a), token_digest(&b));
    }
}
