//! Request bodies: JSON read from the raw bytes by the handlers themselves, so a
//! malformed body, a wrong field type or an oversized body is answered in the API's
//! own error shape (axum's `Json` rejection is plain text), and the content type is
//! not required (clients that forget `Content-Type: application/json` still work).
//! Also the input lists both APIs share: a string or an array of strings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Api, HttpError};

/// The body as `T`: 400 for bytes that are not JSON, 422 for JSON of the wrong
/// shape, 413 past `--payload-limit`.
pub fn json<T: DeserializeOwned>(api: Api, body: Result<Bytes, BytesRejection>, limit: usize) -> Result<T, HttpError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::too_large(
                api,
                format!("the request body is larger than the {limit} bytes allowed (--payload-limit); send fewer or shorter inputs per request"),
            )
        } else {
            HttpError::new(api, StatusCode::BAD_REQUEST, crate::error::Kind::Validation, format!("cannot read the request body: {rejection}"))
        }
    })?;
    use serde_json::error::Category;
    let not_json = |e: &serde_json::Error| {
        HttpError::new(
            api,
            StatusCode::BAD_REQUEST,
            crate::error::Kind::Validation,
            format!("the request body is not valid JSON: {e}"),
        )
    };
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| match e.inner().classify() {
        Category::Data => {
            // The path names the field at fault (`encoding_format`: unknown variant ...).
            let path = e.path().to_string();
            let at = if path == "." { String::new() } else { format!("`{path}`: ") };
            HttpError::invalid(api, format!("invalid request: {at}{}", e.inner()))
        }
        Category::Syntax | Category::Eof | Category::Io => not_json(e.inner()),
    })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

/// The texts of an `input`/`inputs` field: one string, or a non-empty array of
/// strings. Token-id arrays (which OpenAI and TEI also accept) are refused with a
/// message saying so: this server tokenizes itself, and token ids from another
/// tokenizer would embed garbage.
pub fn texts(api: Api, field: &'static str, value: Value, max: usize) -> Result<Vec<String>, HttpError> {
    let texts = match value {
        Value::String(text) => vec![text],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(
                    HttpError::empty(api, format!("`{field}` cannot be empty: send at least one text")).param(field)
                );
            }
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(text) => texts.push(text),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(HttpError::invalid(
                            api,
                            format!(
                                "`{field}[{i}]` is a token array; token ids are not supported: send the text itself"
                            ),
                        )
                        .param(field))
                    }
                    other => {
                        return Err(HttpError::invalid(
                            api,
                            format!(
                                "`{field}[{i}]` is {}, not a string: `{field}` is a string or an array of strings",
                                kind(&other)
                            ),
                        )
                        .param(field))
                    }
                }
            }
            texts
        }
        other => {
            return Err(HttpError::invalid(
                api,
                format!("`{field}` is {}; it must be a string or an array of strings", kind(&other)),
            )
            .param(field))
        }
    };
    if texts.len() > max {
        return Err(HttpError::too_large(
            api,
            format!(
                "{} inputs are more than the {max} one request may carry (--max-client-batch-size); split them over several requests",
                texts.len()
            ),
        )
        .param(field));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        let at = if texts.len() == 1 { format!("`{field}`") } else { format!("`{field}[{i}]`") };
        return Err(
            HttpError::invalid(api, format!("{at} is an empty string; every input must have some text")).param(field)
        );
    }
    Ok(texts)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_string_or_strings() {
        assert_eq!(texts(Api::Tei, "inputs", json!("a"), 2).unwrap(), ["a"]);
        assert_eq!(texts(Api::Tei, "inputs", json!(["a", "b"]), 2).unwrap(), ["a", "b"]);
    }

    #[test]
    fn refusals_say_why() {
        let err = |v: Value| texts(Api::OpenAi, "input", v, 2).unwrap_err();
        let e = err(json!([]));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = err(json!([1, 2, 3]));
        assert!(e.message.contains("token"), "{}", e.message);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err(json!([[1, 2]])).message.contains("token"));
        assert!(err(json!(7)).message.contains("a number"));
        assert!(err(json!(["a", null])).message.contains("input[1]"));
        let e = err(json!(["a", "b", "c"]));
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("--max-client-batch-size"), "{}", e.message);
        let e = err(json!(["a", ""]));
        assert!(e.message.contains("input[1]") && e.message.contains("empty"), "{}", e.message);
        assert!(err(json!("")).message.contains("`input` is an empty string"));
    }

    #[test]
    fn bad_json_is_400_and_wrong_shape_422() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Req {
            n: usize,
        }
        let e = json::<Req>(Api::Tei, Ok(Bytes::from_static(b"{\"n\": ")), 100).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = json::<Req>(Api::Tei, Ok(Bytes::from_static(b"{\"n\": -1}")), 100).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("`n`"), "the field is named: {}", e.message);
        assert!(json::<Req>(Api::Tei, Ok(Bytes::from_static(b"{\"n\": 3}")), 100).is_ok());
        let e = json::<Req>(Api::Tei, Ok(Bytes::from_static(b"{\"n\": 3} trailing")), 100).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
