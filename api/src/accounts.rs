//! Accounts: users, their passwords and credentials. The operations are
//! shared by the CLI (`emtrack user …`, for the first admin and for
//! scripts) and the endpoints (`/v1/login`, `/v1/logout`, `/v1/me`,
//! `/v1/tokens`, `/v1/users`); each change is audited.

use crate::ApiState;
use crate::audit::{self, AuditSlot, Entry};
use crate::error::{ApiError, ApiResult};
use crate::identity::{self, Role, WeakPassword};
use crate::params::{Body, Id};
use crate::scope::{Need, Scope};
use crate::serve::PeerAddr;
use crate::time::Time;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sqlx::PgPool;
use std::fmt;
use std::net::SocketAddr;

/// The longest an API token may live, in days.
pub const MAX_TOKEN_DAYS: u32 = 366;

/// Why an account operation was refused.
#[derive(Debug)]
pub enum AccountError {
    /// No such user.
    UnknownUser(String),
    /// The password is not acceptable.
    Weak(WeakPassword),
    /// A value is not acceptable (taken name, role without its officer…).
    Invalid(String),
    /// The database failed.
    Db(sqlx::Error),
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::UnknownUser(u) => write!(f, "no user {u:?}"),
            AccountError::Weak(w) => w.fmt(f),
            AccountError::Invalid(m) => f.write_str(m),
            AccountError::Db(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for AccountError {}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> AccountError {
        match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                AccountError::Invalid("that username is taken".into())
            }
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
                AccountError::Invalid("no officer with that id".into())
            }
            sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("22021" | "22P05")) => {
                AccountError::Invalid("a value holds a NUL character".into())
            }
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => {
                AccountError::Invalid(format!(
                    "refused by the database's rules ({}): a username is 1–64 of A-Z a-z 0-9 . _ @ -, \
                     and officers and supervisors (only) name their officer id",
                    d.message()
                ))
            }
            _ => AccountError::Db(e),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        match e {
            AccountError::UnknownUser(_) => ApiError::NotFound,
            AccountError::Weak(w) => ApiError::Unprocessable(w.0),
            AccountError::Invalid(m) => ApiError::Unprocessable(m),
            AccountError::Db(e) => ApiError::from(e),
        }
    }
}

/// A user to create.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name: 1–64 of `A-Z a-z 0-9 . _ @ -`.
    pub username: String,
    /// The role.
    pub role: Role,
    /// The officer whose caseload an officer or supervisor holds.
    pub officer_id: Option<i64>,
    /// Shown in the console.
    pub display_name: Option<String>,
    /// At least 12 characters; absent: the account uses API tokens only.
    pub password: Option<String>,
}

/// A user, as shown.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    /// Its id (the actor recorded on its changes).
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Role label.
    pub role: String,
    /// Its caseload's officer.
    pub officer_id: Option<i64>,
    /// Display name.
    pub display_name: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<Time>,
}

/// A row for the audit log of a CLI change (the operating-system user).
fn cli_entry<'a>(action: &'a str, detail: &'a serde_json::Value, os_user: &'a str) -> Entry<'a> {
    Entry {
        caller: None,
        username: Some(os_user),
        action,
        target: None,
        status: 0,
        from: None,
        subject: None,
        reason: None,
        detail: Some(detail),
    }
}

/// Who runs the CLI, as the audit log records it.
fn os_user() -> String {
    format!(
        "os:{}",
        std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

/// Creates a user; returns its id.
pub async fn add_user(pool: &PgPool, u: &NewUser) -> Result<i64, AccountError> {
    if u.role.holds_caseload() != u.officer_id.is_some() {
        return Err(AccountError::Invalid(format!(
            "a user with role {} {} an officer id",
            u.role,
            if u.role.holds_caseload() {
                "needs"
            } else {
                "has no"
            }
        )));
    }
    let hash = match &u.password {
        Some(p) => Some(identity::hash_password(p).map_err(AccountError::Weak)?),
        None => None,
    };
    let id = sqlx::query_scalar(
        "INSERT INTO users (username, role, officer_id, display_name, password_hash) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&u.username)
    .bind(u.role.as_str())
    .bind(u.officer_id)
    .bind(&u.display_name)
    .bind(hash)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// The CLI's `user add`: [`add_user`], audited.
pub async fn cli_add_user(pool: &PgPool, u: &NewUser) -> Result<i64, AccountError> {
    let id = add_user(pool, u).await?;
    let detail = serde_json::json!({"user_id": id, "username": u.username, "role": u.role});
    audit::write(pool, cli_entry("cli user add", &detail, &os_user())).await?;
    Ok(id)
}

/// Sets a user's password (the CLI's `user passwd`), audited; the user's
/// login sessions are revoked.
pub async fn cli_set_password(
    pool: &PgPool,
    username: &str,
    password: &str,
) -> Result<(), AccountError> {
    let hash = identity::hash_password(password).map_err(AccountError::Weak)?;
    let id: Option<i64> =
        sqlx::query_scalar("UPDATE users SET password_hash = $2 WHERE username = $1 RETURNING id")
            .bind(username)
            .bind(hash)
            .fetch_optional(pool)
            .await?;
    let id = id.ok_or_else(|| AccountError::UnknownUser(username.into()))?;
    sqlx::query(
        "UPDATE credentials SET revoked_at = now() \
         WHERE user_id = $1 AND kind = 'session' AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(pool)
    .await?;
    let detail = serde_json::json!({"user_id": id, "username": username});
    audit::write(pool, cli_entry("cli user passwd", &detail, &os_user())).await?;
    Ok(())
}

/// Issues a credential for user `user` valid for `days`; returns its id,
/// the token (shown once, never stored) and its expiry.
async fn issue(
    pool: &PgPool,
    user: i64,
    kind: &str,
    name: Option<&str>,
    lifetime_s: i64,
) -> Result<(i64, String, Time), sqlx::Error> {
    let token = identity::new_token();
    let (id, expires): (i64, Time) = sqlx::query_as(
        "INSERT INTO credentials (user_id, kind, name, token_sha256, expires_at) \
         VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second') RETURNING id, expires_at",
    )
    .bind(user)
    .bind(kind)
    .bind(name)
    .bind(identity::token_digest(&token))
    .bind(lifetime_s)
    .fetch_one(pool)
    .await?;
    Ok((id, token, expires))
}

fn token_days(days: u32) -> Result<i64, AccountError> {
    if (1..=MAX_TOKEN_DAYS).contains(&days) {
        Ok(i64::from(days) * 86_400)
    } else {
        Err(AccountError::Invalid(format!(
            "an API token lives 1 to {MAX_TOKEN_DAYS} days, not {days}"
        )))
    }
}

/// The CLI's `user token`: an API token for `username`, audited; returns
/// the token (print it once) and its expiry.
pub async fn cli_issue_token(
    pool: &PgPool,
    username: &str,
    name: &str,
    days: u32,
) -> Result<(String, Time), AccountError> {
    let lifetime = token_days(days)?;
    let id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE username = $1 AND disabled_at IS NULL")
            .bind(username)
            .fetch_optional(pool)
            .await?;
    let id = id.ok_or_else(|| AccountError::UnknownUser(username.into()))?;
    let (cred, token, expires) = issue(pool, id, "api_token", Some(name), lifetime).await?;
    let detail =
        serde_json::json!({"user_id": id, "credential_id": cred, "name": name, "days": days});
    audit::write(pool, cli_entry("cli user token", &detail, &os_user())).await?;
    Ok((token, expires))
}

/// Disables a user (every credential stops working at once), audited.
pub async fn cli_disable_user(pool: &PgPool, username: &str) -> Result<(), AccountError> {
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE username = $1 RETURNING id",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    let id = id.ok_or_else(|| AccountError::UnknownUser(username.into()))?;
    let detail = serde_json::json!({"user_id": id, "username": username});
    audit::write(pool, cli_entry("cli user disable", &detail, &os_user())).await?;
    Ok(())
}

/// `POST /v1/login`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    username: String,
    password: String,
}

/// A new credential: the token is shown once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Issued {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    /// The credential's id (to revoke it).
    credential_id: i64,
    expires_at: Time,
}

/// `POST /v1/login`: a session token for a username and password. Failed
/// attempts are limited per name and per address (429 with Retry-After).
#[utoipa::path(post, path = "/v1/login", tag = "identity", request_body = Login,
    responses((status = 200, body = Issued), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(s): State<ApiState>,
    PeerAddr(from): PeerAddr,
    Body(body): Body<Login>,
) -> ApiResult<Json<Issued>> {
    let ip = from.map(|a| a.ip());
    s.throttle.check(&body.username, ip)?;
    // A name no account can have (a NUL, too long) is an unknown name.
    let possible = !body.username.contains('\0') && body.username.len() <= 64;
    let row: Option<(i64, Option<String>)> = if possible {
        sqlx::query_as(
            "SELECT id, password_hash FROM users WHERE username = $1 AND disabled_at IS NULL",
        )
        .bind(&body.username)
        .fetch_optional(&s.pool)
        .await?
    } else {
        None
    };
    let row_known = row.is_some();
    let (user, hash) = match row {
        Some((id, Some(h))) => (Some(id), h),
        _ => (None, identity::decoy_hash().to_owned()),
    };
    // argon2id takes 19 MiB and tens of ms each: a bounded number at once.
    let _permit = s
        .verifying
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy("logins"))?;
    let password = body.password.clone();
    let ok = tokio::task::spawn_blocking(move || identity::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    fn entry<'a>(
        username: &'a str,
        from: Option<SocketAddr>,
        action: &'a str,
        status: u16,
        detail: Option<&'a serde_json::Value>,
    ) -> Entry<'a> {
        Entry {
            caller: None,
            username: Some(username),
            action,
            target: Some("/v1/login"),
            status,
            from,
            subject: None,
            reason: None,
            detail,
        }
    }
    let Some(user) = user.filter(|_| ok) else {
        s.throttle.failed(&body.username, ip);
        s.metrics.refused("bad_password");
        // An unknown name is not kept as typed: it may be a password typed
        // into the wrong field.
        let named = if row_known {
            body.username.as_str()
        } else {
            "(unknown name)"
        };
        audit::write(&s.pool, entry(named, from, "login_refused", 401, None)).await?;
        return Err(ApiError::Unauthenticated);
    };
    let (credential_id, token, expires_at) =
        issue(&s.pool, user, "session", None, s.session_s).await?;
    let detail = serde_json::json!({"user_id": user, "credential_id": credential_id});
    audit::write(
        &s.pool,
        entry(&body.username, from, "login", 200, Some(&detail)),
    )
    .await?;
    Ok(Json(Issued {
        token,
        credential_id,
        expires_at,
    }))
}

/// `POST /v1/logout`: revokes the credential the request was made with.
#[utoipa::path(post, path = "/v1/logout", tag = "identity", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn logout(State(s): State<ApiState>, scope: Scope) -> ApiResult<StatusCode> {
    sqlx::query("UPDATE credentials SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(scope.caller.credential)
        .execute(&s.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`'s answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    user_id: i64,
    username: String,
    role: Role,
    officer_id: Option<i64>,
    /// The officers whose caseloads are visible (absent: every subject).
    caseload_officers: Option<Vec<i64>>,
}

/// `GET /v1/me`: who the credential belongs to and what it reaches.
#[utoipa::path(get, path = "/v1/me", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn me(scope: Scope) -> Json<Me> {
    let c = &scope.caller;
    Json(Me {
        user_id: c.user,
        username: c.username.clone(),
        role: c.role,
        officer_id: c.officer,
        caseload_officers: scope.officers(),
    })
}

/// `POST /v1/tokens`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// What it is for.
    name: String,
    /// Its lifetime, 1–366 days.
    days: u32,
}

/// `POST /v1/tokens`: an API token for the caller (for an integration or a
/// script); the token is shown once.
#[utoipa::path(post, path = "/v1/tokens", tag = "identity", request_body = NewToken,
    security(("bearer" = [])),
    responses((status = 200, body = Issued), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn new_token(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Body(body): Body<NewToken>,
) -> ApiResult<Json<Issued>> {
    let lifetime = token_days(body.days)?;
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(ApiError::Unprocessable(
            "a token's name is 1–200 bytes of text".into(),
        ));
    }
    let (credential_id, token, expires_at) = issue(
        &s.pool,
        scope.caller.user,
        "api_token",
        Some(&body.name),
        lifetime,
    )
    .await?;
    slot.detail(
        serde_json::json!({"credential_id": credential_id, "name": body.name, "days": body.days}),
    );
    Ok(Json(Issued {
        token,
        credential_id,
        expires_at,
    }))
}

/// A credential, as listed (never its token).
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Credential {
    id: i64,
    user_id: i64,
    kind: String,
    name: Option<String>,
    created_at: Time,
    expires_at: Time,
    revoked_at: Option<Time>,
    last_used_at: Option<Time>,
}

/// `GET /v1/tokens`: the caller's credentials (an admin's: everyone's).
#[utoipa::path(get, path = "/v1/tokens", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Vec<Credential>)))]
pub(crate) async fn tokens(
    State(s): State<ApiState>,
    scope: Scope,
) -> ApiResult<Json<Vec<Credential>>> {
    let all = scope.require(Need::Administer).is_ok();
    let rows = sqlx::query_as(
        "SELECT id, user_id, kind, name, created_at, expires_at, revoked_at, last_used_at \
         FROM credentials WHERE ($1 OR user_id = $2) ORDER BY id DESC LIMIT 1000",
    )
    .bind(all)
    .bind(scope.caller.user)
    .fetch_all(&s.pool)
    .await?;
    Ok(Json(rows))
}

/// `DELETE /v1/tokens/{id}`: revokes one of the caller's credentials (an
/// admin: anyone's); it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "identity", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The credential's id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn revoke(
    State(s): State<ApiState>,
    scope: Scope,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    let all = scope.require(Need::Administer).is_ok();
    let done = sqlx::query(
        "UPDATE credentials SET revoked_at = coalesce(revoked_at, now()) \
         WHERE id = $1 AND ($2 OR user_id = $3)",
    )
    .bind(id)
    .bind(all)
    .bind(scope.caller.user)
    .execute(&s.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/users`: every user (admin).
#[utoipa::path(get, path = "/v1/users", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Vec<User>), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn users(State(s): State<ApiState>, scope: Scope) -> ApiResult<Json<Vec<User>>> {
    scope.require(Need::Administer)?;
    let rows = sqlx::query_as(
        "SELECT id, username, role, officer_id, display_name, disabled_at FROM users ORDER BY id",
    )
    .fetch_all(&s.pool)
    .await?;
    Ok(Json(rows))
}

/// `POST /v1/users`: creates a user (admin).
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = NewUser,
    security(("bearer" = [])),
    responses((status = 201, body = User), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create_user(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Body(body): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    scope.require(Need::Administer)?;
    let id = add_user(&s.pool, &body).await?;
    slot.detail(serde_json::json!({"user_id": id, "username": body.username, "role": body.role}));
    let u = sqlx::query_as(
        "SELECT id, username, role, officer_id, display_name, disabled_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&s.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// `POST /v1/users/{id}/disable`: disables a user (admin); every credential
/// stops working at once.
#[utoipa::path(post, path = "/v1/users/{id}/disable", tag = "identity", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The user's id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn disable_user(
    State(s): State<ApiState>,
    scope: Scope,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    scope.require(Need::Administer)?;
    let done =
        sqlx::query("UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&s.pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
