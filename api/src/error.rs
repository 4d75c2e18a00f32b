//! How a refusal becomes an HTTP answer, in one place: a status and a JSON
//! body `{"error": code, "message": text}`. The codes are stable (clients
//! branch on them); the messages are for people.

use alert_service::ActionError;
use alerts::BookError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request was refused.
#[derive(Debug)]
pub enum ApiError {
    /// No credential, or one that is unknown, expired, revoked or whose
    /// account is disabled (401; which of these is not said).
    Unauthenticated,
    /// The caller's role may not use this endpoint at all (403).
    Forbidden,
    /// Not found, or outside the caller's scope: the two are one answer (404).
    NotFound,
    /// The request is malformed or a value is out of range (400), with what
    /// and where.
    Invalid(String),
    /// The request is well formed but the change cannot be made (422).
    Unprocessable(String),
    /// The change conflicts with the resource's state (409).
    Conflict(String),
    /// Too many attempts; try again after this many seconds (429).
    TooMany(u64),
    /// The request body is over the limit (413).
    TooLarge,
    /// Too many open streams (503).
    Busy(&'static str),
    /// The database or the alert service is unavailable (503).
    Unavailable(String),
}

/// The JSON body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthenticated`, `forbidden`, `not_found`,
    /// `invalid`, `unprocessable`, `conflict`, `rate_limited`, `busy`,
    /// `unavailable`, `timeout`, `payload_too_large`.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required (POST /v1/login, or an API token)".into(),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role may not use this endpoint".into(),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".into()),
            ApiError::Invalid(m) => (StatusCode::BAD_REQUEST, "invalid", m.clone()),
            ApiError::Unprocessable(m) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m.clone())
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::TooMany(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts; try again in {s} s"),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a request body has at most {} bytes", crate::MAX_BODY_BYTES),
            ),
            ApiError::Busy(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("too many open {what}; try again later"),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.clone()),
        }
    }
}

/// An error answer with this status, code and message.
pub(crate) fn answer(status: StatusCode, error: &'static str, message: String) -> Response {
    (status, axum::Json(ErrorBody { error, message })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut r = answer(status, code, message);
        if let ApiError::TooMany(s) = self
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"emtrack\""),
            );
        }
        r
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        // Text PostgreSQL cannot hold (a NUL character): the caller's input.
        if let sqlx::Error::Database(d) = &e
            && matches!(d.code().as_deref(), Some("22021" | "22P05"))
        {
            return ApiError::Invalid(
                "a value holds a character that cannot be stored (NUL)".into(),
            );
        }
        // The detail goes to the log, not to the caller.
        tracing::error!(error = %e, "officer API: database error");
        ApiError::Unavailable("the database is unavailable; try again".into())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match &e {
            ActionError::Book(BookError::Unknown(_)) => ApiError::NotFound,
            ActionError::Book(BookError::Resolved(_)) => ApiError::Conflict(e.to_string()),
            ActionError::Book(BookError::NoteRequired(_) | BookError::BadNote(_)) => {
                ApiError::Unprocessable(e.to_string())
            }
            ActionError::NotStored | ActionError::Stopped => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// The result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
