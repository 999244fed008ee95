//! The HTTP side of a push: one `reqwest` client set up as the download client is
//! (user agent, `HTTP(S)_PROXY` from the environment, connect timeout), bounded retries
//! with back-off, and the Hub's refusals turned into errors that say what to do.

use std::time::Duration;

use reqwest::{Response, StatusCode, Url};

use crate::error::error_chain;
use crate::remote::HubConfig;
use crate::HubError;

/// The public Hub, whose address huggingface_hub rewrites to `HF_ENDPOINT` in the URLs
/// the server hands out (`fix_hf_endpoint_in_url`).
const PUBLIC_HUB: &str = "https://huggingface.co";

/// The most of a JSON answer that is read: the listing of a repo with 100 000 files is
/// about 20 MB. A server that sends more is not a Hub, and must not fill the memory.
const MAX_JSON: usize = 64 << 20;

/// The most of a refusal's body kept for its message (which shows 300 characters).
const MAX_ERROR_BODY: usize = 64 << 10;

/// The longest back-off between two attempts, whatever `base_delay` says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a request may take. Every request has a bound, so a server that stops
/// answering (or answers a byte a minute) ends a push with an error, never a hang.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// No byte received (and, for uploads, no byte of the body accepted) for this
    /// long: the attempt failed.
    pub(crate) idle: Duration,
    /// The whole of any request but an upload's body (those can take hours on a slow
    /// line; `idle` bounds them).
    pub(crate) request: Duration,
}

impl Timeouts {
    /// The Hub answers even a large commit well within these.
    pub(crate) const DEFAULT: Timeouts = Timeouts { idle: Duration::from_secs(300), request: Duration::from_secs(600) };
}

/// How one attempt of a request ended, for the retry loop.
pub(crate) enum Attempt {
    /// An answer to act on (any status but 5xx and 429).
    Answer(Response),
    /// Worth trying again: 5xx, 429, or the connection failed; the text says which.
    Retry(String),
}

/// A connection to the Hub for one push.
pub(crate) struct Client {
    http: reqwest::Client,
    pub(crate) config: HubConfig,
    token: String,
    pub(crate) repo_id: String,
    pub(crate) timeouts: Timeouts,
}

impl Client {
    pub(crate) fn new(config: &HubConfig, token: &str, repo_id: &str) -> Result<Self, HubError> {
        Self::with_timeouts(config, token, repo_id, Timeouts::DEFAULT)
    }

    pub(crate) fn with_timeouts(
        config: &HubConfig,
        token: &str,
        repo_id: &str,
        timeouts: Timeouts,
    ) -> Result<Self, HubError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dartboard-rs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20).min(timeouts.request))
            .read_timeout(timeouts.idle)
            .build()
            .map_err(|e| HubError::Unreachable { endpoint: config.endpoint.clone(), reason: error_chain(&e) })?;
        Url::parse(&config.endpoint).map_err(|_| HubError::NotAHub {
            endpoint: config.endpoint.clone(),
            detail: "HF_ENDPOINT is not a valid URL".to_owned(),
        })?;
        Ok(Client { http, config: config.clone(), token: token.to_owned(), repo_id: repo_id.to_owned(), timeouts })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// `{endpoint}/{segments...}`, each segment percent-encoded (a branch named
    /// `a/b` is one segment, `a%2Fb`, as huggingface_hub quotes it).
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = Url::parse(&self.config.endpoint).expect("checked in Client::new");
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `{endpoint}/api/models/{org}/{name}/{segments...}`.
    pub(crate) fn api(&self, segments: &[&str]) -> Url {
        let (org, name) = self.repo_id.split_once('/').expect("push validates ORG/NAME");
        let mut all = vec!["api", "models", org, name];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// A URL the server handed out, parsed; one on the public Hub is moved to
    /// `HF_ENDPOINT`, as huggingface_hub does, so a mirror that echoes the Hub's
    /// addresses still works.
    pub(crate) fn href(&self, href: &str) -> Result<Url, HubError> {
        let fixed = match href.strip_prefix(PUBLIC_HUB) {
            Some(rest) if self.config.endpoint != PUBLIC_HUB && (rest.is_empty() || rest.starts_with('/')) => {
                format!("{}{rest}", self.config.endpoint)
            }
            _ => href.to_owned(),
        };
        Url::parse(&fixed).map_err(|_| self.not_a_hub(&format!("an upload address that is not a URL: {href:?}")))
    }

    /// Adds the token.
    pub(crate) fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(&self.token)
    }

    /// Whether `url` is on the endpoint (same scheme, host and port): only there may
    /// the token go. Upload hosts the server names elsewhere get only the headers the
    /// batch answer gave for them, as huggingface_hub sends them.
    pub(crate) fn on_endpoint(&self, url: &Url) -> bool {
        Url::parse(&self.config.endpoint).is_ok_and(|endpoint| endpoint.origin() == url.origin())
    }

    /// Sends one attempt and sorts the outcome.
    pub(crate) async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        match request.send().await {
            Ok(r) if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS => {
                Attempt::Retry(format!("HTTP {}", r.status()))
            }
            Ok(r) => Attempt::Answer(r),
            Err(e) => Attempt::Retry(error_chain(&e)),
        }
    }

    /// Sends the request `build` makes until it is answered (anything but 5xx, 429 or
    /// a failed connection), at most `max_attempts` times with doubling delays. For
    /// requests that are safe to repeat: everything but the commit.
    pub(crate) async fn send(
        &self,
        mut build: impl FnMut() -> Result<reqwest::RequestBuilder, HubError>,
    ) -> Result<Response, HubError> {
        let mut last = String::new();
        for attempt in 0..self.config.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            match self.attempt(build()?.timeout(self.timeouts.request)).await {
                Attempt::Answer(r) => return Ok(r),
                Attempt::Retry(why) => {
                    tracing::warn!(attempt = attempt + 1, "request failed ({why}); retrying");
                    last = why;
                }
            }
        }
        Err(self.gave_up(last))
    }

    /// The error after the last attempt failed.
    pub(crate) fn gave_up(&self, last: String) -> HubError {
        HubError::ServerError {
            endpoint: self.config.endpoint.clone(),
            attempts: self.config.max_attempts.max(1),
            last,
        }
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.config.base_delay.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(MAX_BACKOFF)
    }

    pub(crate) fn not_a_hub(&self, detail: &str) -> HubError {
        HubError::NotAHub { endpoint: self.config.endpoint.clone(), detail: detail.to_owned() }
    }

    /// Reads a JSON answer; anything else means the endpoint is not a Hub.
    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
        what: &str,
    ) -> Result<T, HubError> {
        let (bytes, complete) = read_capped(response, MAX_JSON)
            .await
            .map_err(|e| self.not_a_hub(&format!("{what}: {}", error_chain(&e))))?;
        if !complete {
            return Err(self.not_a_hub(&format!("{what} is larger than {} MiB", MAX_JSON >> 20)));
        }
        serde_json::from_slice(&bytes).map_err(|_| self.not_a_hub(&format!("{what} is not the Hub's JSON")))
    }

    /// The error for an answer that is not a success: 401 is the token, 403 a token
    /// that may not write, the Hub's `X-Error-Code` names a missing repo or revision,
    /// anything else is reported with the server's own message.
    pub(crate) async fn refusal(&self, response: Response, action: &str) -> HubError {
        let status = response.status();
        let code = header(&response, "x-error-code");
        let header_message = header(&response, "x-error-message");
        let body = read_capped(response, MAX_ERROR_BODY).await.map(|(body, _)| body).unwrap_or_default();
        let message = header_message
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            })
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("no reason given").to_owned()
                } else {
                    text.chars().take(300).collect()
                }
            });
        // A server may quote the header it refused; the token is never shown.
        let message = if self.token.is_empty() { message } else { message.replace(&self.token, "<token>") };
        let endpoint = self.config.endpoint.clone();
        let repo_id = self.repo_id.clone();
        match (status.as_u16(), code.as_deref()) {
            (401, _) => HubError::TokenRejected { endpoint, message },
            (403, _) => HubError::WriteForbidden { repo_id, endpoint, message },
            (_, Some("RepoNotFound")) => HubError::RepoNotFound { repo_id, endpoint, has_token: true },
            (_, Some("RevisionNotFound")) => {
                let revision = action.rsplit_once('@').map_or("main", |(_, revision)| revision).to_owned();
                HubError::RevisionNotFound { repo_id, revision }
            }
            (status, _) => HubError::PushRejected { endpoint, action: action.to_owned(), status, message },
        }
    }
}

/// At most `max` bytes of the body, and whether that was all of it. The rest is not
/// read (a declared length over the cap is not even started).
async fn read_capped(mut response: Response, max: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Ok((Vec::new(), false));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_quote_segments_and_public_hub_links_move_to_the_endpoint() {
        let config = HubConfig::default().with_endpoint("http://127.0.0.1:9/mirror/");
        let client = Client::new(&config, "t", "org/name").unwrap();
        assert_eq!(
            client.api(&["commit", "feature/x"]).as_str(),
            "http://127.0.0.1:9/mirror/api/models/org/name/commit/feature%2Fx"
        );
        assert_eq!(
            client.href("https://huggingface.co/api/x?y=1").unwrap().as_str(),
            "http://127.0.0.1:9/mirror/api/x?y=1"
        );
        assert_eq!(client.href("https://s3.example/put?sig=1").unwrap().as_str(), "https://s3.example/put?sig=1");
        assert!(matches!(client.href("not a url"), Err(HubError::NotAHub { .. })));
        let bad = HubConfig::default().with_endpoint("not a url");
        assert!(matches!(Client::new(&bad, "t", "org/name"), Err(HubError::NotAHub { .. })));
    }
}
