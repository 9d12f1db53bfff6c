//! What `goldfish stress` reads besides the load: the hosts' `/metrics` (the snapshots before and
//! after, and the samples taken during the load) and the probe's kv counter; and the bounded body
//! reads and error texts that the load workers share.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;
use reqwest::{Client, Url};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::load::Progress;
use super::prometheus::Scrape;
use super::{
    MAX_BODY_BYTES, MAX_ERROR_EXAMPLE_CHARS, MAX_METRICS_BYTES, PROBE_TIMEOUT, SAMPLE_INTERVAL,
    SAMPLE_TIMEOUT, SETTLE_POLL, SETTLE_TIMEOUT, series,
};

/// The probe's answer to `GET /fn/{function}/count`.
#[derive(Deserialize)]
struct CountAnswer {
    /// Absent or null before the first increment.
    kv: Option<u64>,
}

/// [`read_kv`], noting in `errors` why the reading is missing when it is.
pub(super) async fn kv_reading(
    client: &Client,
    url: &Url,
    when: &str,
    errors: &mut Vec<String>,
) -> Option<u64> {
    match read_kv(client, url).await {
        Ok(kv) => Some(kv),
        Err(error) => {
            errors.push(format!("{when}: {error}"));
            None
        }
    }
}

/// Reads the probe's kv counter without incrementing it.
async fn read_kv(client: &Client, url: &Url) -> Result<u64, String> {
    let response = client
        .get(url.clone())
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = read_bounded(response, MAX_BODY_BYTES)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "GET {url}: status {status}: {}",
            example_text(&body)
        ));
    }
    let answer: CountAnswer = serde_json::from_slice(&body)
        .map_err(|e| format!("GET {url}: not {{\"kv\": N}}: {e}: {}", example_text(&body)))?;
    Ok(answer.kv.unwrap_or(0))
}

/// Scrapes one host's `/metrics`.
async fn scrape(client: &Client, url: &Url, timeout: Duration) -> anyhow::Result<Scrape> {
    let response = client
        .get(url.clone())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let status = response.status();
    let body = read_bounded(response, MAX_METRICS_BYTES).await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: status {status}: {}", example_text(&body));
    }
    let page = String::from_utf8(body).with_context(|| format!("GET {url}: page is not UTF-8"))?;
    Scrape::parse(&page).with_context(|| format!("GET {url}"))
}

/// Snapshots every host's `/metrics`, polling for up to [`SETTLE_TIMEOUT`] until each reports no
/// live instance; returns the last scrape of each (live may still be > 0 when time ran out, and
/// the checks will say so).
pub(super) async fn settle(client: &Client, metrics_urls: &[Url]) -> anyhow::Result<Vec<Scrape>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut scrapes = Vec::with_capacity(metrics_urls.len());
        for url in metrics_urls {
            scrapes.push(
                scrape(client, url, PROBE_TIMEOUT)
                    .await
                    .context("reading a host's metrics")?,
            );
        }
        if scrapes.iter().all(|scrape| live_instances(scrape) == 0) || Instant::now() >= deadline {
            return Ok(scrapes);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

pub(super) fn live_instances(scrape: &Scrape) -> u64 {
    as_count(scrape.sum(series::INSTANCES_LIVE, &[]))
}

/// A metric value as a count: counters and gauges of whole things are exported as floats.
pub(super) fn as_count(value: f64) -> u64 {
    // `as` saturates: NaN and negatives become 0, which the checks then report as a mismatch.
    value.round() as u64
}

/// Reads a body of at most `limit` bytes.
pub(super) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            bail!("response body larger than {limit} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes ("error sending request: connection refused"): reqwest's own message
/// alone rarely says what went wrong.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A body shortened for an error message.
pub(super) fn example_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(MAX_ERROR_EXAMPLE_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// One sampler tick.
pub(super) struct RawSample {
    pub(super) seconds: f64,
    pub(super) completed: u64,
    /// Per target; `None` where the scrape failed.
    pub(super) live: Vec<Option<u64>>,
}

/// Every [`SAMPLE_INTERVAL`] until told to stop: how many requests finished and how many
/// instances each host has live. Also refreshes the progress bar's message.
pub(super) async fn sample(
    client: Client,
    metrics_urls: Vec<Url>,
    progress: Arc<Progress>,
    bar: ProgressBar,
    started: Instant,
    mut stop: oneshot::Receiver<()>,
) -> Vec<RawSample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    // A slow scrape delays the next sample instead of causing a burst of catch-up scrapes.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Sent or dropped: either way the load is over.
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let seconds = started.elapsed().as_secs_f64();
        let completed = progress.completed.load(Ordering::Relaxed);
        let mut live = Vec::with_capacity(metrics_urls.len());
        for url in &metrics_urls {
            live.push(
                scrape(&client, url, SAMPLE_TIMEOUT)
                    .await
                    .ok()
                    .map(|scrape| live_instances(&scrape)),
            );
        }
        let live_text: Vec<String> = live
            .iter()
            .map(|l| l.map_or_else(|| "?".to_owned(), |n| n.to_string()))
            .collect();
        bar.set_message(format!(
            "failed {}, live {}",
            progress.failed.load(Ordering::Relaxed),
            live_text.join("/")
        ));
        samples.push(RawSample {
            seconds,
            completed,
            live,
        });
    }
    samples
}
