//! How a refused action becomes an HTTP answer.

use alert_service::ActionError;
use alerts::BookError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An officer's action that was not done, as an HTTP answer.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) ActionError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            ActionError::Book(BookError::Unknown(_)) => StatusCode::NOT_FOUND,
            ActionError::Book(BookError::Resolved(_)) => StatusCode::CONFLICT,
            ActionError::Book(BookError::NoteRequired(_) | BookError::BadNote(_)) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ActionError::NotStored | ActionError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{}\n", self.0)).into_response()
    }
}
