//! Device credentials on the broker, issued, rotated and revoked through
//! the same code as `emtrack device` (crate `identities`), when the service
//! has a broker admin identity. Registering a device issues its credential,
//! retiring it revokes it, and `POST /v1/devices/{id}/credential` rotates
//! it. A password is shown once, in the answer that issues it; the audit
//! log records that it was issued, never the password.
//!
//! The broker change is made before the database change commits: if the
//! broker refuses or is unreachable, the request fails whole (503) and
//! nothing is stored.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::scope::{Need, Scope};
use axum::Json;
use axum::extract::{Path, State};
use identities::IdentityError;
use protocol::DeviceId;

/// A broker credential, shown once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Credential {
    /// The MQTT user name (the device id).
    username: String,
    /// The only client id it may connect with (the device id).
    client_id: String,
    /// The password; the broker keeps only a salted hash of it.
    password: String,
}

fn unavailable(e: &IdentityError) -> ApiError {
    ApiError::Unavailable(format!("device credentials: {e}"))
}

fn device_id(id: &str) -> ApiResult<DeviceId> {
    DeviceId::parse_any(id).map_err(|e| ApiError::Unprocessable(format!("device id {id:?}: {e}")))
}

fn shown(device: &DeviceId, password: &link::Secret) -> Credential {
    let user = identities::acl::device_username(device);
    Credential {
        client_id: user.clone(),
        username: user,
        password: password.expose().to_owned(),
    }
}

/// Issues `id`'s credential if the service administers the broker.
pub(crate) async fn issue(s: &ApiState, id: &str) -> ApiResult<Option<Credential>> {
    let Some(broker) = &s.broker else {
        return Ok(None);
    };
    let device = device_id(id)?;
    let admin = broker.admin().await.map_err(|e| unavailable(&e))?;
    match admin.enrol_device(&device).await {
        Ok(p) => Ok(Some(shown(&device, &p))),
        Err(IdentityError::Exists(_)) => Err(ApiError::Conflict(format!(
            "the broker already has a credential for {id}; rotate it (POST /v1/devices/{id}/credential)"
        ))),
        Err(e) => Err(unavailable(&e)),
    }
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
    responses((status = 200, body = Credential), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn rotate(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<Credential>> {
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
    Ok(Json(shown(&device, &password)))
}
