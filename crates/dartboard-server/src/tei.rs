//! text-embeddings-inference's routes, with its field names, defaults and error
//! shape: `POST /embed`, `POST /rerank`, `GET /health`, `GET /info`.
//!
//! Semantics carried over from TEI (facts, read from its router): `normalize`
//! defaults to true and is applied *after* `dimensions` truncation, so truncated
//! vectors are unit length again; `truncate` defaults to true (TEI's
//! `--auto-truncate` default); an empty input list is 400 `Empty`, an empty text
//! 422 `Validation`; `/rerank` returns `{index, score, text?}` sorted by score,
//! best first, with `raw_scores` giving the logits before the model's activation.
//! Where our pipeline differs: `normalize: false` returns the model's output as its
//! modules define it (sentence-transformers' output), so a model with a `Normalize`
//! module still returns unit vectors; only right truncation exists.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dartboard_api::PromptChoice;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Api, HttpError, Kind};
use crate::state::AppState;

/// TEI's `truncation_direction`: only `right` (the tokenizer's) is supported here.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
enum TruncationDirection {
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
    #[serde(alias = "left", alias = "LEFT")]
    Left,
}

fn check_direction(direction: TruncationDirection) -> Result<(), HttpError> {
    if direction == TruncationDirection::Left {
        return Err(HttpError::invalid(
            Api::Tei,
            "`truncation_direction: left` is not supported: texts are truncated on the right, keeping their first tokens",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct EmbedRequest {
    inputs: Value,
    #[serde(default = "yes")]
    normalize: bool,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: TruncationDirection,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

fn yes() -> bool {
    true
}

pub(crate) async fn embed(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let api = Api::Tei;
    let request: EmbedRequest = crate::body::json(api, body, state.options().payload_limit)?;
    check_direction(request.truncation_direction)?;
    let texts = crate::body::texts(api, "inputs", request.inputs, state.options().max_client_batch_size)?;
    let models = state.models(api)?;
    let prompt = match request.prompt_name {
        Some(name) => PromptChoice::Name(name),
        None => PromptChoice::Default,
    };
    let truncate = request.truncate.unwrap_or(true);
    let (rows, _) = crate::embed(&state, api, &models.embedder, texts, prompt, truncate, request.dimensions).await?;
    let vectors: Vec<Vec<f32>> = rows
        .rows()
        .map(|row| {
            let mut row = row.to_vec();
            if request.normalize {
                normalize(&mut row);
            }
            row
        })
        .collect();
    Ok(Json(vectors).into_response())
}

/// L2-normalises `row` (sum of squares in f64); a zero vector stays zero rather
/// than becoming NaN.
pub(crate) fn normalize(row: &mut [f32]) {
    let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let scale = (1.0 / norm) as f32;
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

#[derive(Deserialize)]
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: TruncationDirection,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
}

#[derive(Serialize)]
struct Rank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

pub(crate) async fn rerank(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let api = Api::Tei;
    let request: RerankRequest = crate::body::json(api, body, state.options().payload_limit)?;
    check_direction(request.truncation_direction)?;
    if request.texts.is_empty() {
        return Err(HttpError::empty(api, "`texts` cannot be empty: send at least one text to score"));
    }
    let max = state.options().max_client_batch_size;
    if request.texts.len() > max {
        return Err(HttpError::too_large(
            api,
            format!(
                "{} texts are more than the {max} one request may carry (--max-client-batch-size); split them over several requests",
                request.texts.len()
            ),
        ));
    }
    if request.query.is_empty() {
        if let Some(i) = request.texts.iter().position(String::is_empty) {
            return Err(HttpError::invalid(
                api,
                format!("`query` and `texts[{i}]` are both empty: a pair needs some text"),
            ));
        }
    }
    let models = state.models(api)?;
    let Some(reranker) = &models.reranker else {
        return Err(HttpError::new(
            api,
            StatusCode::FAILED_DEPENDENCY,
            Kind::Backend,
            "no reranker is loaded: start `dartboard serve` with `--reranker MODEL` (a cross-encoder) to serve /rerank",
        ));
    };
    let truncate = request.truncate.unwrap_or(true);
    let texts = request.texts;
    let scored =
        reranker.score_async(request.query, texts.clone(), truncate).await.map_err(|e| HttpError::from_api(api, e))?;
    let scores = if request.raw_scores { scored.raw_scores } else { scored.scores };
    let mut ranks: Vec<Rank> =
        scores.iter().enumerate().map(|(index, &score)| Rank { index, score, text: None }).collect();
    // Best first; equal scores keep input order (a stable sort).
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    if request.return_text {
        for rank in &mut ranks {
            rank.text = Some(texts[rank.index].clone());
        }
    }
    Ok(Json(ranks).into_response())
}

pub(crate) async fn health(State(state): State<AppState>) -> Result<Response, HttpError> {
    state.models(Api::Tei)?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn info(State(state): State<AppState>) -> Result<Response, HttpError> {
    let models = state.models(Api::Tei)?;
    let model = models.embedder.info();
    let options = state.options();
    let reranker = models.reranker.as_ref().map(|r| {
        let i = r.info();
        json!({ "model_id": i.name, "model_sha": i.revision, "max_input_length": i.max_input_length,
                "model_dtype": i.dtype, "device": i.device })
    });
    Ok(Json(json!({
        "model_id": model.name,
        "model_sha": model.revision,
        "model_dtype": model.dtype,
        "device": model.device,
        "embedding_dim": model.dim,
        "max_input_length": model.max_input_length,
        "max_concurrent_requests": options.max_concurrent_requests,
        "max_batch_tokens": options.max_batch_tokens,
        "max_client_batch_size": options.max_client_batch_size,
        "payload_limit": options.payload_limit,
        "auto_truncate": true,
        "reranker": reranker,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut row = [3.0f32, 4.0];
        normalize(&mut row);
        assert_eq!(row, [0.6, 0.8]);
        let mut zero = [0.0f32; 3];
        normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn defaults_follow_text_embeddings_inference() {
        let r: EmbedRequest = serde_json::from_value(json!({"inputs": "x"})).unwrap();
        assert!(r.normalize);
        assert_eq!(r.truncate, None);
        assert!(r.truncation_direction == TruncationDirection::Right);
        let r: RerankRequest = serde_json::from_value(json!({"query": "q", "texts": ["a"]})).unwrap();
        assert!(!r.raw_scores && !r.return_text);
        let r: RerankRequest =
            serde_json::from_value(json!({"query": "q", "texts": ["a"], "truncation_direction": "Left"})).unwrap();
        assert!(check_direction(r.truncation_direction).is_err());
    }
}
