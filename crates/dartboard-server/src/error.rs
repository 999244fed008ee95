//! Every error the server answers with, in the shape of the API the client called:
//! OpenAI's `{"error": {"message", "type", "param", "code"}}` under `/v1`,
//! text-embeddings-inference's `{"error", "error_type"}` everywhere else.
//!
//! Handlers build an [`HttpError`] (a status, a [`Kind`] and a message naming the
//! value and the fix) and say which [`Api`] they serve; the body is chosen here, so
//! no route can answer a client in the other API's shape, or in plain text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dartboard_api::embeddings::EmbedError;
use dartboard_api::ApiError;
use serde_json::json;

/// Which API's error shape a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI's embeddings API (`/v1/...`).
    OpenAi,
    /// text-embeddings-inference's API (`/embed`, `/rerank`, `/health`, `/info`).
    Tei,
}

impl Api {
    /// The API a path belongs to: everything under `/v1` is OpenAI's.
    pub fn of_path(path: &str) -> Api {
        if path == "/v1" || path.starts_with("/v1/") {
            Api::OpenAi
        } else {
            Api::Tei
        }
    }
}

/// What went wrong, independent of the API's vocabulary for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No inputs, or an empty text where one is required.
    Empty,
    /// A value the API does not accept (wrong type, out of range, too long).
    Validation,
    /// The tokenizer refused a text.
    Tokenizer,
    /// Too many requests at once, or the model's queue is full.
    Overloaded,
    /// A missing or wrong API key.
    Unauthorized,
    /// The model is still loading, or its worker has stopped.
    Unhealthy,
    /// No such route, or a route whose model is not loaded.
    NotFound,
    /// The route exists, but not for this method.
    MethodNotAllowed,
    /// The model failed on input it accepted: our fault or the model's, not the client's.
    Backend,
}

impl Kind {
    /// text-embeddings-inference's `error_type` (its `ErrorType` enum serialises the
    /// variant names as they are); the last three are ours, for cases TEI answers
    /// without a body.
    fn tei_name(self) -> &'static str {
        match self {
            Kind::Empty => "Empty",
            Kind::Validation => "Validation",
            Kind::Tokenizer => "Tokenizer",
            Kind::Overloaded => "Overloaded",
            Kind::Unhealthy => "Unhealthy",
            Kind::Backend => "Backend",
            Kind::Unauthorized => "Unauthorized",
            Kind::NotFound => "NotFound",
            Kind::MethodNotAllowed => "MethodNotAllowed",
        }
    }

    /// OpenAI's `type` and `code` for this kind of error.
    fn openai_type_and_code(self) -> (&'static str, Option<&'static str>) {
        match self {
            Kind::Empty | Kind::Validation | Kind::Tokenizer => ("invalid_request_error", None),
            Kind::Overloaded => ("rate_limit_error", Some("rate_limit_exceeded")),
            Kind::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            Kind::NotFound => ("invalid_request_error", Some("not_found")),
            Kind::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            Kind::Unhealthy => ("server_error", Some("service_unavailable")),
            Kind::Backend => ("server_error", None),
        }
    }
}

/// An error response: status, kind, message, and (OpenAI) the request field at fault.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The API whose shape the body takes.
    pub api: Api,
    /// What went wrong.
    pub kind: Kind,
    /// For the client: the value at fault and how to fix it.
    pub message: String,
    /// The request field at fault (OpenAI's `param`).
    pub param: Option<&'static str>,
}

impl HttpError {
    /// An error of `kind` with `status`.
    pub fn new(api: Api, status: StatusCode, kind: Kind, message: impl Into<String>) -> Self {
        HttpError { status, api, kind, message: message.into(), param: None }
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// 400, no inputs or an empty text.
    pub fn empty(api: Api, message: impl Into<String>) -> Self {
        Self::new(api, StatusCode::BAD_REQUEST, Kind::Empty, message)
    }

    /// 422, a value the API does not accept.
    pub fn invalid(api: Api, message: impl Into<String>) -> Self {
        Self::new(api, StatusCode::UNPROCESSABLE_ENTITY, Kind::Validation, message)
    }

    /// 413, a request larger than a limit (inputs, bytes, tokens).
    pub fn too_large(api: Api, message: impl Into<String>) -> Self {
        Self::new(api, StatusCode::PAYLOAD_TOO_LARGE, Kind::Validation, message)
    }

    /// 429, over a concurrency limit.
    pub fn overloaded(api: Api, message: impl Into<String>) -> Self {
        Self::new(api, StatusCode::TOO_MANY_REQUESTS, Kind::Overloaded, message)
    }

    /// 503, the model is not (or no longer) serving.
    pub fn unhealthy(api: Api, message: impl Into<String>) -> Self {
        Self::new(api, StatusCode::SERVICE_UNAVAILABLE, Kind::Unhealthy, message)
    }

    /// The answer to a failed call into the model handle. Bad input gets a 4xx that
    /// says what to change; only failures of the model itself are 5xx (and logged).
    pub fn from_api(api: Api, err: ApiError) -> Self {
        match err {
            ApiError::Busy { .. } => Self::overloaded(api, err.to_string()),
            ApiError::TooLong { .. } => Self::too_large(
                api,
                format!(
                    "{err}; send `truncate: true` (the default) to embed only the first tokens, or shorten the input"
                ),
            )
            .param(if api == Api::OpenAi { "input" } else { "inputs" }),
            ApiError::Stopped => Self::unhealthy(api, err.to_string()),
            ApiError::Model(ref inner) => match inner {
                EmbedError::UnknownPrompt { .. } => Self::invalid(api, err.to_string()).param("prompt_name"),
                EmbedError::TruncateDim { .. } => Self::invalid(api, err.to_string()).param("dimensions"),
                EmbedError::TextTooLarge { .. } | EmbedError::RequestTooLarge { .. } => {
                    Self::too_large(api, err.to_string())
                }
                EmbedError::Tokenize(_) => {
                    Self::new(api, StatusCode::UNPROCESSABLE_ENTITY, Kind::Tokenizer, err.to_string())
                }
                _ => Self::backend(api, &err),
            },
            _ => Self::backend(api, &err),
        }
    }

    fn backend(api: Api, err: &ApiError) -> Self {
        tracing::error!(error = %err, "the model failed on a request");
        Self::new(api, StatusCode::INTERNAL_SERVER_ERROR, Kind::Backend, err.to_string())
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = match self.api {
            Api::OpenAi => {
                let (kind, code) = self.kind.openai_type_and_code();
                json!({ "error": { "message": self.message, "type": kind, "param": self.param, "code": code } })
            }
            Api::Tei => json!({ "error": self.message, "error_type": self.kind.tei_name() }),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.kind == Kind::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.kind == Kind::Overloaded || self.kind == Kind::Unhealthy {
            // Both pass: a client that honours Retry-After comes back instead of hammering.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(err: HttpError) -> (StatusCode, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn each_api_gets_its_own_shape() {
        let (status, body) = body_of(HttpError::empty(Api::OpenAi, "no input").param("input")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": {"message": "no input", "type": "invalid_request_error", "param": "input", "code": null}})
        );
        let (status, body) = body_of(HttpError::too_large(Api::Tei, "too many")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body, json!({"error": "too many", "error_type": "Validation"}));
    }

    #[tokio::test]
    async fn handle_errors_map_to_client_statuses() {
        let busy = HttpError::from_api(Api::Tei, ApiError::Busy { queued: 3 });
        assert_eq!((busy.status, busy.kind), (StatusCode::TOO_MANY_REQUESTS, Kind::Overloaded));
        let long = HttpError::from_api(Api::Tei, ApiError::TooLong { index: 2, tokens: 900, max: 256 });
        assert_eq!(long.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(long.message.contains("truncate"), "{}", long.message);
        let prompt = HttpError::from_api(
            Api::Tei,
            ApiError::Model(EmbedError::UnknownPrompt { name: "x".into(), available: vec!["query".into()] }),
        );
        assert_eq!(prompt.status, StatusCode::UNPROCESSABLE_ENTITY);
        let stopped = HttpError::from_api(Api::OpenAi, ApiError::Stopped);
        assert_eq!(stopped.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn v1_paths_are_openai() {
        assert_eq!(Api::of_path("/v1/embeddings"), Api::OpenAi);
        assert_eq!(Api::of_path("/v1"), Api::OpenAi);
        assert_eq!(Api::of_path("/v10"), Api::Tei);
        assert_eq!(Api::of_path("/embed"), Api::Tei);
    }
}
