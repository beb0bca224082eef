//! Error answers: `{"error": "..."}` with the status that fits the failure.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{
    org::{OrgError, ServiceError},
    store::StoreError,
};

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for people; a refused rule is named in it.
    pub(crate) error: String,
}

/// An error answer.
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl ApiError {
    /// A 400 that names the field at fault.
    pub(super) fn field(field: &str, why: &str) -> Self {
        Self(StatusCode::BAD_REQUEST, format!("{field}: {why}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::Exists(_) => StatusCode::CONFLICT,
            StoreError::UnknownUser(_) | StoreError::UnknownDeviceName(_) => StatusCode::NOT_FOUND,
            StoreError::InvalidName(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Store(error) => error.into(),
            ServiceError::Refused(refused) => {
                let status = match &refused {
                    OrgError::NotAllowed { .. } | OrgError::SeatLimit { .. } => {
                        StatusCode::FORBIDDEN
                    }
                    OrgError::UnknownOrg(_)
                    | OrgError::UnknownUnit(_)
                    | OrgError::UnknownMember(_) => StatusCode::NOT_FOUND,
                    OrgError::Taken(_)
                    | OrgError::AlreadyAssigned { .. }
                    | OrgError::WrongStatus { .. } => StatusCode::CONFLICT,
                    OrgError::DomainNotAgreed { .. }
                    | OrgError::Invalid(_)
                    | OrgError::Field { .. } => StatusCode::BAD_REQUEST,
                };
                ApiError(status, refused.to_string())
            }
        }
    }
}
