//! The HTTP side of the client commands: one request per command to a host's admin or invoke
//! API, the host's `{"error": ...}` message turned into the command's error, and component
//! uploads streamed from disk behind a progress bar.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use tokio_util::io::ReaderStream;

use super::Target;
use crate::openapi::ErrorBody;

/// How long connecting to the host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an admin call other than a deploy may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deploy may take: uploading up to the host's component limit, then a compile the
/// host bounds by its `--compile-timeout-secs` (120 s by default; a 20 MB runtime takes ~20 s).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an invocation may take; the host's own deadline (`--timeout-ms`) normally ends it
/// far sooner.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(300);
/// Uploads smaller than this finish before a progress bar would be worth drawing.
const PROGRESS_MIN_BYTES: u64 = 1 << 20;
/// How often the deploy bar checks whether the upload is done (to say it is compiling).
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// How long to wait for the host's answer to an upload it refuses before reading it (see
/// [`Client::early_answer`]); it answers those at once.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// One host, and the token to show it.
pub struct Client {
    /// The base URL without a trailing slash.
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A component file opened for upload, with the bar that follows it (hidden unless a person
/// is watching a large upload).
pub struct Upload {
    file: tokio::fs::File,
    len: u64,
    bar: ProgressBar,
}

impl Upload {
    /// Opens `path`; the bar shows only when `progress` is wanted, stderr is a terminal and the
    /// file is large enough to take a while.
    pub async fn open(path: &Path, progress: bool) -> std::io::Result<Upload> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let bar = if progress && len >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(Upload { file, len, bar })
    }
}

/// An invocation's answer, whatever its status.
pub struct Answer {
    pub status: u16,
    /// The status line's reason phrase, e.g. `Not Found`.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// `{"status", "headers": [[name, value], ...], "body"}`, the body as (lossy) text.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status,
            "headers": self.headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }

    /// `HTTP 404 Not Found: <the host's message>` for a failed call.
    pub fn failure(&self) -> String {
        let status = format!("HTTP {} {}", self.status, self.reason);
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => format!("{status}: {}", body.error),
            Err(_) => status,
        }
    }
}

/// Whether `e` is the connection breaking while the body was being sent.
fn cut_off(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        source = error.source();
    }
    false
}

impl Client {
    pub fn new(target: &Target) -> anyhow::Result<Client> {
        let base = target.url.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).with_context(|| {
            format!("invalid host URL `{base}` (--url / GOLDFISH_URL), e.g. http://127.0.0.1:8080")
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client {
            base,
            token: target.token.clone().filter(|t| !t.is_empty()),
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`, turning transport failures into a message that names the host.
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// A failure to get any answer, as a message that names the host.
    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let message = if e.is_timeout() {
            format!("the host at {} did not answer in time", self.base)
        } else if e.is_connect() {
            format!(
                "cannot reach a host at {}: is `goldfish serve` running there? (set the address \
                 with --url or GOLDFISH_URL)",
                self.base
            )
        } else {
            format!("the request to {} failed", self.base)
        };
        anyhow::Error::new(e).context(message)
    }

    /// `response` if it succeeded, else the host's error message as the error.
    async fn checked(&self, response: Response) -> anyhow::Result<Response> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.error,
            Err(_) if !text.trim().is_empty() => text.trim().to_owned(),
            Err(_) => status.canonical_reason().unwrap_or("no message").to_owned(),
        };
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            " (pass the admin token with --token or GOLDFISH_ADMIN_TOKEN)"
        } else {
            ""
        };
        anyhow::bail!("{message}{hint} (HTTP {})", status.as_u16())
    }

    async fn json<T: DeserializeOwned>(&self, response: Response) -> anyhow::Result<T> {
        let response = self.checked(response).await?;
        response
            .json()
            .await
            .with_context(|| format!("the host at {} answered with unexpected JSON", self.base))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let request = self.request(Method::GET, path).timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.json(response).await
    }

    pub async fn post_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let request = self.request(Method::POST, path).timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.json(response).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let request = self.request(Method::DELETE, path).timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.checked(response).await.map(drop)
    }

    /// PUTs the file to `path`, streaming it from disk. Once the last byte is sent, the bar
    /// (when shown) turns into a spinner while the host validates and compiles.
    pub async fn deploy<T: DeserializeOwned>(
        &self,
        path: &str,
        upload: Upload,
    ) -> anyhow::Result<T> {
        let Upload { file, len, bar } = upload;
        let body = reqwest::Body::wrap_stream(ReaderStream::new(bar.wrap_async_read(file)));
        let request = self
            .request(Method::PUT, path)
            .header(CONTENT_TYPE, "application/wasm")
            .header(CONTENT_LENGTH, len)
            .timeout(DEPLOY_TIMEOUT)
            .body(body);
        let compiling = (!bar.is_hidden()).then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                while bar.position() < len {
                    tokio::time::sleep(PROGRESS_POLL).await;
                }
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
                    bar.set_style(style);
                }
                bar.set_message("uploaded; the host is validating and compiling");
                bar.enable_steady_tick(PROGRESS_POLL);
            })
        });
        let response = match request.send().await {
            Err(e) if cut_off(&e) => match self.early_answer(path, len).await {
                Some(answer) => Ok(answer),
                None => Err(self.transport_error(e)),
            },
            other => other.map_err(|e| self.transport_error(e)),
        };
        if let Some(task) = compiling {
            task.abort();
        }
        bar.finish_and_clear();
        self.json(response?).await
    }

    /// The answer to an upload the host refused before reading it (a wrong token, or a body
    /// too large for the host to read and discard first, see `server::drain`): it answers at
    /// once and closes the connection, and a client still sending the body loses that answer
    /// to the broken connection. Asking again with the same headers
    /// and no body bytes gets it. `None` if the host waits for the body instead.
    async fn early_answer(&self, path: &str, len: u64) -> Option<Response> {
        // The body never yields: the host either answers from the headers, or waits in vain
        // until the timeout. `_open` keeps the body pending rather than ended.
        let (_open, silent) = tokio::io::duplex(1);
        let request = self
            .request(Method::PUT, path)
            .header(CONTENT_TYPE, "application/wasm")
            .header(CONTENT_LENGTH, len)
            .timeout(EARLY_ANSWER_WAIT)
            .body(reqwest::Body::wrap_stream(ReaderStream::new(silent)));
        request.send().await.ok()
    }

    /// Calls a function; any status is an answer (only transport failures are errors).
    pub async fn invoke(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Answer> {
        let method = Method::from_bytes(method.as_bytes())
            .with_context(|| format!("`{method}` is not an HTTP method"))?;
        // Invocations need no token: it is not sent where it is not needed.
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(INVOKE_TIMEOUT);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = self.send(request).await?;
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = response
            .bytes()
            .await
            .context("the answer's body was cut off")?;
        Ok(Answer {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or_default().to_owned(),
            headers,
            body: body.to_vec(),
        })
    }
}
