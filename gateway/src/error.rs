//! HTTP errors and extractors: every response, including rejected input, is a JSON `{"msg": ...}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tilegate_api::Msg;
use tilegate_sessions::Error as EngineError;

/// An error answered to the client: a status and a JSON message.
#[derive(Debug)]
pub enum ApiError {
    /// Refused by the engine.
    Engine(EngineError),
    /// Malformed body, query or path.
    BadRequest(String),
    /// Body over the size limit.
    PayloadTooLarge(String),
    /// No such route.
    NotFound(String),
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// CSRF protection is on and the header is missing.
    MissingCsrfHeader,
    /// Authentication is on and the request has no valid credentials.
    Unauthorized,
    /// The caller may not do this.
    Forbidden(String),
    /// A per-user limit is reached.
    OverLimit(String),
    /// Refused or failed by the dataset catalog.
    Dataset(tilegate_compute::dataset::Error),
    /// A bug; details are logged, not sent.
    Internal,
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

impl From<tilegate_compute::dataset::Error> for ApiError {
    fn from(e: tilegate_compute::dataset::Error) -> Self {
        Self::Dataset(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            Self::Engine(e) => {
                let status = match &e {
                    EngineError::SessionNotFound(_)
                    | EngineError::BatchNotFound(_)
                    | EngineError::StatementNotFound { .. } => StatusCode::NOT_FOUND,
                    EngineError::InvalidKind(_)
                    | EngineError::InvalidRequest(_)
                    | EngineError::DuplicateName(_)
                    | EngineError::SessionNotActive { .. } => StatusCode::BAD_REQUEST,
                    EngineError::TooManySessions(_) => StatusCode::TOO_MANY_REQUESTS,
                    EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                (status, e.to_string())
            }
            Self::Dataset(e) => {
                use tilegate_compute::dataset::Error as D;
                let status = match &e {
                    D::NotFound(_) => StatusCode::NOT_FOUND,
                    // Everything else is about a store or selection the caller named.
                    D::InvalidRequest(_) | D::InvalidMetadata(_) | D::Corrupt(_) | D::Io(_) => StatusCode::BAD_REQUEST,
                };
                (status, e.to_string())
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed on this route.".into()),
            Self::MissingCsrfHeader => {
                (StatusCode::BAD_REQUEST, "Missing Required Header for CSRF protection (X-Requested-By).".into())
            }
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error; it has been logged.".into()),
            Self::Unauthorized => {
                let msg = "Authentication required: send a bearer token or HTTP Basic credentials.";
                let challenge = [(axum::http::header::WWW_AUTHENTICATE, r#"Basic realm="tilegate", Bearer"#)];
                return (StatusCode::UNAUTHORIZED, challenge, axum::Json(Msg::new(msg))).into_response();
            }
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Self::OverLimit(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        };
        (status, axum::Json(Msg::new(msg))).into_response()
    }
}

/// A JSON body or response. Unlike `axum::Json` it takes any content type, reads an empty body
/// as `{}`, and answers bad bodies in our error format.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!("Request body too large: {}", e.body_text()))
            } else {
                ApiError::BadRequest(format!("Cannot read request body: {}", e.body_text()))
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        // Every body is an object: serde would fill a struct from an array by position.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::BadRequest("Invalid JSON body: it must be a JSON object.".into()));
        }
        serde_json::from_slice(body).map(ApiJson).map_err(|e| ApiError::BadRequest(format!("Invalid JSON body: {e}")))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters, with bad values answered in our error format.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::BadRequest(format!("Invalid query: {}", e.body_text())))
    }
}

/// Path parameters, with undecodable ones answered in our error format.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| ApiError::BadRequest(format!("Invalid path: {}", e.body_text())))
    }
}
