//! Request parameters: query strings and JSON bodies whose refusals are
//! answered in the API's error format, and the shared checks (page sizes,
//! times, pages).

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use store::Millis;

/// A query string, decoded into `T` (400 with what is wrong otherwise).
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, s)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|e| ApiError::Invalid(e.body_text()))
    }
}

/// A JSON body, decoded into `T` (400 with what is wrong otherwise; the
/// size is capped by the router's body limit).
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, s)
            .await
            .map(|axum::Json(t)| Body(t))
            .map_err(|e| match e.status().as_u16() {
                413 => ApiError::TooLarge,
                _ => ApiError::Invalid(e.body_text()),
            })
    }
}

/// `?reason=`: the reason of a removal, retirement or lift, as a query
/// parameter.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Why {
    /// Why; kept with the order's version, or in the audit log.
    pub(crate) reason: String,
}

/// The reason given for a change: 1–1000 bytes, trimmed; `kept` says where
/// it is kept ("with the version", "in the audit log").
pub(crate) fn reason<'a>(r: &'a str, kept: &str) -> Result<&'a str, ApiError> {
    let r = r.trim();
    if r.is_empty() || r.len() > 1000 {
        return Err(ApiError::Invalid(format!(
            "a change needs a reason (1–1000 bytes): it is kept {kept}"
        )));
    }
    Ok(r)
}

/// A page size: `given`, else `default`, within 1..=`max`.
pub(crate) fn limit(given: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::Invalid(format!(
            "limit must be between 1 and {max}, not {n}"
        ))),
    }
}

/// An RFC 3339 time parameter named `name`.
pub(crate) fn time(name: &str, value: Option<&str>) -> Result<Option<Millis>, ApiError> {
    value
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| Millis(t.as_millisecond()))
                .map_err(|e| {
                    ApiError::Invalid(format!(
                        "{name} must be an RFC 3339 time such as 2026-12-01T10:00:00Z, not {v:?} ({e})"
                    ))
                })
        })
        .transpose()
}

/// Rows fetched with `limit + 1`: the page, and the key of its last row
/// when there is a next page.
pub(crate) fn page<T, K>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<K>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(key);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// A numeric id from the path (400 in the API's format otherwise).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Id(pub(crate) i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<i64>::from_request_parts(parts, s)
            .await
            .map(|axum::extract::Path(id)| Id(id))
            .map_err(|e| ApiError::Invalid(e.body_text()))
    }
}
