//! What a run will do, checked before anything is sent: the flags' values within their limits,
//! and every URL of the run (load, `/metrics`, the probe's counter) built once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::Uri;
use reqwest::{Method, Url};

use super::{DEFAULT_REQUESTS, MAX_CONCURRENCY, MAX_REQUESTS, StressConfig};

/// The validated shape of a run.
pub(super) struct Plan {
    pub(super) targets: Vec<String>,
    /// Load URI per target, same order, as the load client takes them (parsed once here, not
    /// per request).
    pub(super) load_urls: Arc<[Uri]>,
    /// `/metrics` per target, same order.
    pub(super) metrics_urls: Vec<Url>,
    /// The probe's non-incrementing counter read, on the first target.
    pub(super) count_url: Url,
    pub(super) method: Method,
    pub(super) limit: u64,
    pub(super) duration: Option<Duration>,
    pub(super) concurrency: usize,
}

impl Plan {
    pub(super) fn new(config: &StressConfig) -> anyhow::Result<Plan> {
        if config.targets.is_empty() {
            bail!("no --target given");
        }
        if config.function.is_empty() || config.function.contains('/') {
            bail!(
                "--function must be a function name, got {:?}",
                config.function
            );
        }
        if !config.path.starts_with('/') {
            bail!("--path must start with `/`, got {:?}", config.path);
        }
        if !(1..=MAX_CONCURRENCY).contains(&config.concurrency) {
            bail!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                config.concurrency
            );
        }
        if config.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        if let Some(requests) = config.requests.filter(|&n| n > MAX_REQUESTS) {
            bail!("--requests must be at most {MAX_REQUESTS}, got {requests}");
        }
        let method = Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("--method {:?} is not an HTTP method", config.method))?;
        let mut targets: Vec<String> = Vec::new();
        for target in &config.targets {
            let target = target.trim().trim_end_matches('/').to_owned();
            let url =
                Url::parse(&target).with_context(|| format!("--target {target:?} is not a URL"))?;
            if url.scheme() != "http" {
                bail!("--target {target:?}: only http:// URLs are supported");
            }
            if targets.contains(&target) {
                bail!("--target {target:?} is given twice; its metrics would be counted twice");
            }
            targets.push(target);
        }
        // `/fn/NAME/` and `/fn/NAME` are the same function call; the bare form is used for `/`.
        let function_path = if config.path == "/" {
            String::new()
        } else {
            config.path.clone()
        };
        let url = |text: String| {
            Url::parse(&text).with_context(|| format!("{text:?} is not a valid URL"))
        };
        let load_urls = targets
            .iter()
            .map(|target| {
                let url = url(format!("{target}/fn/{}{function_path}", config.function))?;
                Uri::try_from(url.as_str()).with_context(|| format!("{url} is not a valid URI"))
            })
            .collect::<anyhow::Result<_>>()?;
        let metrics_urls = targets
            .iter()
            .map(|target| url(format!("{target}/metrics")))
            .collect::<anyhow::Result<_>>()?;
        let count_url = url(format!("{}/fn/{}/count", targets[0], config.function))?;
        let limit = match (config.requests, config.duration) {
            (Some(requests), _) => requests,
            (None, Some(_)) => MAX_REQUESTS,
            (None, None) => DEFAULT_REQUESTS,
        };
        Ok(Plan {
            targets,
            load_urls,
            metrics_urls,
            count_url,
            method,
            limit,
            duration: config.duration,
            concurrency: config.concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &[&str]) -> StressConfig {
        StressConfig {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            function: "probe".into(),
            path: "/".into(),
            method: "post".into(),
            requests: None,
            duration: None,
            concurrency: 4,
            generator_check: None,
            progress: false,
        }
    }

    #[test]
    fn plan_builds_urls_and_strips_trailing_slashes() {
        let plan = Plan::new(&config(&["http://127.0.0.1:1/", "http://127.0.0.1:2"])).unwrap();
        assert_eq!(plan.targets, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(plan.load_urls[0].to_string(), "http://127.0.0.1:1/fn/probe");
        assert_eq!(plan.metrics_urls[1].as_str(), "http://127.0.0.1:2/metrics");
        assert_eq!(plan.count_url.as_str(), "http://127.0.0.1:1/fn/probe/count");
        assert_eq!(plan.method, Method::POST);
        assert_eq!(plan.limit, DEFAULT_REQUESTS);
        let mut with_path = config(&["http://127.0.0.1:1"]);
        with_path.path = "/a/b?x=1".into();
        assert_eq!(
            Plan::new(&with_path).unwrap().load_urls[0].to_string(),
            "http://127.0.0.1:1/fn/probe/a/b?x=1"
        );
    }

    #[test]
    fn duration_alone_is_bounded_by_the_request_ceiling() {
        let mut timed = config(&["http://127.0.0.1:1"]);
        timed.duration = Some(Duration::from_secs(1));
        assert_eq!(Plan::new(&timed).unwrap().limit, MAX_REQUESTS);
        timed.requests = Some(5);
        assert_eq!(Plan::new(&timed).unwrap().limit, 5);
    }

    #[test]
    fn plan_refuses_what_it_cannot_measure() {
        let refused = |config: StressConfig| Plan::new(&config).err().map(|e| e.to_string());
        assert!(refused(config(&[])).is_some());
        assert!(
            refused(config(&["https://example.test"]))
                .unwrap()
                .contains("only http://")
        );
        assert!(
            refused(config(&["http://127.0.0.1:1", "http://127.0.0.1:1/"]))
                .unwrap()
                .contains("twice")
        );
        let mut zero = config(&["http://127.0.0.1:1"]);
        zero.concurrency = 0;
        assert!(refused(zero).is_some());
        let mut no_slash = config(&["http://127.0.0.1:1"]);
        no_slash.path = "count".into();
        assert!(refused(no_slash).is_some());
    }
}
