//! `POST /v1/embeddings`: OpenAI's embeddings API, as its official clients call it.
//!
//! `input` is a string or an array of strings (token arrays are refused, see
//! [`crate::body::texts`]); `encoding_format` is `float` (JSON numbers) or `base64`
//! (the little-endian f32 bytes of each vector, which OpenAI's Python client
//! requests by default and decodes with `numpy.frombuffer(..., dtype="float32")`);
//! `dimensions` keeps the first N values of each vector exactly as
//! sentence-transformers' `truncate_dim` does (no renormalisation); `model` and
//! `user` are accepted and not used (one model is served). Texts longer than the
//! model's maximum are truncated, as sentence-transformers does; `usage` counts the
//! tokens actually embedded.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use dartboard_api::PromptChoice;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Api, HttpError};
use crate::state::AppState;

#[derive(Deserialize)]
struct Request {
    input: Value,
    #[serde(default)]
    encoding_format: EncodingFormat,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as OpenAI's clients send it; one model is served
    model: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // an end-user id for OpenAI's abuse monitoring; nothing to do with it here
    user: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct Answer {
    object: &'static str,
    data: Vec<Item>,
    model: String,
    usage: Usage,
}

/// The little-endian bytes of `row`, base64-encoded (standard alphabet, padded).
pub(crate) fn base64_le(row: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(row.len() * 4);
    for v in row {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let api = Api::OpenAi;
    let request: Request = crate::body::json(api, body, state.options().payload_limit)?;
    let texts = crate::body::texts(api, "input", request.input, state.options().max_client_batch_size)?;
    let models = state.models(api)?;
    let (rows, tokens) =
        crate::embed(&state, api, &models.embedder, texts, PromptChoice::Default, true, request.dimensions).await?;
    let data = rows
        .rows()
        .enumerate()
        .map(|(index, row)| Item {
            object: "embedding",
            index,
            embedding: match request.encoding_format {
                EncodingFormat::Float => Vector::Float(row.to_vec()),
                EncodingFormat::Base64 => Vector::Base64(base64_le(row)),
            },
        })
        .collect();
    let total: usize = tokens.iter().sum();
    let answer = Answer {
        object: "list",
        data,
        model: models.embedder.name().to_owned(),
        usage: Usage { prompt_tokens: total, total_tokens: total },
    };
    Ok(Json(answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 is 0x3f800000: bytes 00 00 80 3f; -2.0 is 0xc0000000.
        let encoded = base64_le(&[1.0, -2.0]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(&encoded).unwrap();
        assert_eq!(bytes, [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]);
    }
}
