//! Device credentials on the broker, issued, rotated and revoked through
//! the same code as `emtrack device` (crate `identities`), when the service
//! has a broker admin identity. Registering a device issues its credential,
//! retiring it revokes it, and `POST /v1/devices/{id}/credential` rotates
//! it. A password is shown once, in the answer that issues it; the audit
//! log records that it was issued, never the password.
//!
//! The broker change is made before the database change commits: if the
//! broker refuses (a reserved id: 422) or is unreachable (503), nothing is
//! stored. A broker that answers too late may still have made the change;
//! the same request again completes it (registering replaces a credential
//! already on the broker, retiring one already revoked succeeds).

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::scope::{Need, Scope};
use axum::Json;
use axum::extract::{Path, State};
use identities::IdentityError;
use protocol::DeviceId;

/// A broker credential, shown once. `Debug` leaves the password out.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceCredential {
    /// The MQTT user name (the device id).
    username: String,
    /// The only client id it may connect with (the device id).
    client_id: String,
    /// The password; the broker keeps only a salted hash of it.
    password: String,
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("username", &self.username)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

/// An answer that carries a password: kept by no cache.
pub(crate) const NO_STORE: [(axum::http::HeaderName, &str); 1] =
    [(axum::http::header::CACHE_CONTROL, "no-store")];

fn unavailable(e: &IdentityError) -> ApiError {
    if let IdentityError::Reserved(_) = e {
        return ApiError::Unprocessable(e.to_string());
    }
    ApiError::Unavailable(format!("device credentials: {e}"))
}

fn device_id(id: &str) -> ApiResult<DeviceId> {
    DeviceId::parse_any(id).map_err(|e| ApiError::Unprocessable(format!("device id {id:?}: {e}")))
}

fn shown(device: &DeviceId, password: &link::Secret) -> DeviceCredential {
    let user = identities::acl::device_username(device);
    DeviceCredential {
        client_id: user.clone(),
        username: user,
        password: password.expose().to_owned(),
    }
}

/// Issues `id`'s credential if the service administers the broker.
pub(crate) async fn issue(s: &ApiState, id: &str) -> ApiResult<Option<DeviceCredential>> {
    let Some(broker) = &s.broker else {
        return Ok(None);
    };
    let device = device_id(id)?;
    let admin = broker.admin().await.map_err(|e| unavailable(&e))?;
    // A credential left on the broker (issued by `emtrack device enrol`, or
    // by an earlier attempt whose answer was lost) is replaced: the one
    // shown now is the only one that works.
    let password = match admin.enrol_device(&device).await {
        Err(IdentityError::Exists(_)) => admin.rotate_device(&device).await,
        other => other,
    }
    .map_err(|e| unavailable(&e))?;
    Ok(Some(shown(&device, &password)))
}

/// Revokes `id`'s credential if the service administers the broker.
pub(crate) async fn revoke(s: &ApiState, id: &str) -> ApiResult<()> {
    let Some(broker) = &s.broker else {
        return Ok(());
    };
    let device = device_id(id)?;
    let admin = broker.admin().await.map_err(|e| unavailable(&e))?;
    admin
        .retire_device(&device)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(())
}

/// `POST /v1/devices/{id}/credential`: a new password for a device (admin);
/// the old one stops working at once and its session is disconnected. A
/// device registered before the service administered the broker gets its
/// first credential here.
#[utoipa::path(post, path = "/v1/devices/{id}/credential", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "The device's id")),
    responses((status = 200, body = DeviceCredential), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn rotate(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Path(id): Path<String>,
) -> ApiResult<(
    [(axum::http::HeaderName, &'static str); 1],
    Json<DeviceCredential>,
)> {
    scope.require(Need::Administer)?;
    let retired: Option<bool> =
        sqlx::query_scalar("SELECT retired_at IS NOT NULL FROM devices WHERE id = $1")
            .bind(&id)
            .fetch_optional(&s.pool)
            .await?;
    match retired {
        None => return Err(ApiError::NotFound),
        Some(true) => return Err(ApiError::Conflict(format!("device {id} is retired"))),
        Some(false) => {}
    }
    let Some(broker) = &s.broker else {
        return Err(ApiError::Unavailable(
            "this service does not administer the broker (no broker_admin_username): \
             use `emtrack device rotate`"
                .into(),
        ));
    };
    let device = device_id(&id)?;
    let admin = broker.admin().await.map_err(|e| unavailable(&e))?;
    let password = match admin.rotate_device(&device).await {
        Err(IdentityError::NotFound(_)) => admin.enrol_device(&device).await,
        other => other,
    }
    .map_err(|e| unavailable(&e))?;
    slot.detail(serde_json::json!({"device_id": id, "credential": "issued"}));
    Ok((NO_STORE, Json(shown(&device, &password))))
}
