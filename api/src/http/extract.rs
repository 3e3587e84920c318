//! Request extractors whose rejections are the API's JSON errors (400 or 413), never
//! axum's plain-text ones.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::service::error::ApiError;

/// Largest JSON body accepted.
const JSON_LIMIT: usize = 1 << 20;

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req.into_body(), JSON_LIMIT).await?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))
    }
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // axum reports the limit only in the message of its boxed error.
        if format!("{e:?}").contains("LengthLimitError") || e.to_string().contains("length limit") {
            ApiError::too_large(format!("the body is larger than {limit} bytes"))
        } else {
            ApiError::invalid(format!("cannot read the body: {e}"))
        }
    })
}
