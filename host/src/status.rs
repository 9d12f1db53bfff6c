//! `GET /`: the status page. One server-rendered HTML page with no script and no external asset:
//! this host and every host it sees through the store (from their heartbeats, see
//! [`crate::fleet`]), the deployed functions with this host's and all hosts' figures, and
//! whether the store answers. Every value printed is escaped. With Redis down the page still
//! answers 200, says so, and shows what this host knows by itself.
//!
//! Unauthenticated, like `/metrics`: it names functions and host addresses, so keep it internal
//! (`deploy/nginx.conf` serves only `/fn/` to the outside).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};

use crate::cli::output::{size, utc};
use crate::fleet::{self, FunctionFigures, FunctionTotals, Heartbeat, Quantile};
use crate::metrics::UNKNOWN_FUNCTION;
use crate::registry::FunctionEntry;
use crate::server::AppState;

/// The page reloads itself this often (a `<meta>` refresh: no script).
const REFRESH_SECONDS: u32 = 5;

/// Everything the page shows, gathered before any HTML is written.
pub struct View {
    pub now_ms: u64,
    /// This host as of now (fresher than its last heartbeat in the store).
    pub this: Heartbeat,
    /// What the store is, for people (`redis at redis://...`, or the memory store).
    pub store: String,
    /// The store's answer to a ping: its round trip, or why it failed.
    pub store_ping: Result<Duration, String>,
    /// Every host's heartbeat, or why they could not be read.
    pub hosts: Result<Vec<Heartbeat>, String>,
    /// Every deployed function, or why they could not be read.
    pub functions: Result<Vec<FunctionEntry>, String>,
    /// This host's figures per function, since it started.
    pub figures: BTreeMap<String, FunctionFigures>,
}

/// `GET /`.
pub async fn page(State(state): State<AppState>) -> impl IntoResponse {
    let view = gather(&state).await;
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Nothing on the page loads or runs anything; say so to the browser too.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        Html(render(&view)),
    )
}

async fn gather(state: &AppState) -> View {
    let figures = fleet::figures(&state.metrics);
    let this = state
        .fleet
        .heartbeat(&figures, state.metrics.instances_live.get());
    let started = Instant::now();
    let store_ping = state
        .backend
        .ping()
        .await
        .map(|()| started.elapsed())
        .map_err(|e| e.to_string());
    // With the store down every read would fail the same way, each after a timeout: skip them.
    let (hosts, functions) = match &store_ping {
        Ok(_) => (
            fleet::hosts(&state.backend)
                .await
                .map_err(|e| e.to_string()),
            state.registry.list().await.map_err(|e| e.to_string()),
        ),
        Err(e) => (Err(e.clone()), Err(e.clone())),
    };
    View {
        now_ms: fleet::unix_ms(),
        this,
        store: state.backend.describe(),
        store_ping,
        hosts,
        functions,
        figures,
    }
}

/// The page's HTML.
pub fn render(view: &View) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let this = &view.this;
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>Goldfish · {host}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{FISH} Goldfish</h1>
<p>host <b>{id}</b> · {address} · {hostname} · v{version} · up {up}</p>
</header>
<main>
"#,
        host = escape(&this.address),
        id = escape(&this.id),
        address = escape(&this.address),
        hostname = escape(&this.hostname),
        version = escape(&this.version),
        up = ago(view.now_ms / 1000, this.started_at),
    );
    render_store(&mut html, view);
    let live = render_hosts(&mut html, view);
    render_functions(&mut html, view, &live);
    let _ = write!(
        html,
        r#"</main>
<footer>
<a href="/metrics">/metrics</a> · <a href="/v1/openapi.json">/v1/openapi.json</a> ·
<a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> ·
rendered {now} · reloads every {REFRESH_SECONDS} s
</footer>
</body>
</html>
"#,
        now = utc(view.now_ms / 1000),
    );
    html
}

fn render_store(html: &mut String, view: &View) {
    match &view.store_ping {
        Ok(latency) => {
            let _ = writeln!(
                html,
                r#"<p class="store ok" id="store" data-store="up"><span class="badge ok">store up</span> {store} answered a ping in {latency}</p>"#,
                store = escape(&view.store),
                latency = duration(*latency),
            );
        }
        Err(e) => {
            let _ = writeln!(
                html,
                r#"<p class="store down" id="store" data-store="down"><span class="badge down">Redis is down</span> {store} did not answer: {error}. Hosts and deployed functions cannot be listed until it does; the figures below are this host's own.</p>"#,
                store = escape(&view.store),
                error = escape(e),
            );
        }
    }
}

/// The hosts table; returns the heartbeats that count for the fleet's figures (this host's,
/// fresh, and every other host that is not stale).
fn render_hosts(html: &mut String, view: &View) -> Vec<Heartbeat> {
    let mut hosts: Vec<Heartbeat> = match &view.hosts {
        Ok(hosts) => hosts
            .iter()
            .filter(|h| h.id != view.this.id)
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    };
    hosts.insert(0, view.this.clone());
    let stale = hosts
        .iter()
        .filter(|h| h.id != view.this.id && h.is_stale(view.now_ms))
        .count();
    let _ = write!(
        html,
        r#"<section>
<h2>Hosts <small>{live} live{stale}</small></h2>
<table id="hosts">
<thead><tr><th>host</th><th>address</th><th>version</th><th>up</th><th>last seen</th><th class="n">requests</th><th class="n">instances live</th><th>state</th></tr></thead>
<tbody>
"#,
        live = hosts.len() - stale,
        stale = if stale > 0 {
            format!(", {stale} stale")
        } else {
            String::new()
        },
    );
    for host in &hosts {
        let (state, label) = if host.id == view.this.id {
            ("this", "this host")
        } else if host.is_stale(view.now_ms) {
            ("stale", "stale")
        } else {
            ("live", "live")
        };
        let _ = writeln!(
            html,
            r#"<tr data-host="{id}" data-address="{address}" class="{state}"><td><b>{id}</b><div class="sub">{hostname}</div></td><td><a href="http://{address}/">{address}</a></td><td>{version}</td><td title="{started}">{up}</td><td data-field="seen">{seen} ago</td><td class="n" data-field="requests">{requests}</td><td class="n" data-field="instances-live">{instances}</td><td><span class="badge {state}">{label}</span></td></tr>"#,
            id = escape(&host.id),
            hostname = escape(&host.hostname),
            address = escape(&host.address),
            version = escape(&host.version),
            started = utc(host.started_at),
            up = ago(view.now_ms / 1000, host.started_at),
            seen = ago(view.now_ms / 1000, host.seen_at_ms / 1000),
            requests = count(host.requests),
            instances = host.instances_live,
        );
    }
    html.push_str("</tbody>\n</table>\n");
    if let Err(e) = &view.hosts {
        let _ = writeln!(
            html,
            r#"<p class="note">Other hosts cannot be listed: {}.</p>"#,
            escape(e)
        );
    }
    html.push_str("</section>\n");
    hosts
        .into_iter()
        .filter(|h| h.id == view.this.id || !h.is_stale(view.now_ms))
        .collect()
}

fn render_functions(html: &mut String, view: &View, live: &[Heartbeat]) {
    let entries: BTreeMap<&str, &FunctionEntry> = match &view.functions {
        Ok(entries) => entries.iter().map(|e| (e.name.as_str(), e)).collect(),
        Err(_) => BTreeMap::new(),
    };
    // Deployed functions, and any this host has served since (deleted since, or all of them
    // when the registry cannot be read).
    let names: BTreeSet<&str> = entries
        .keys()
        .copied()
        .chain(view.figures.keys().map(String::as_str))
        .filter(|name| *name != UNKNOWN_FUNCTION)
        .collect();
    let mut fleet: BTreeMap<&str, FunctionTotals> = BTreeMap::new();
    for host in live {
        for (name, totals) in &host.functions {
            let sum = fleet.entry(name.as_str()).or_default();
            sum.requests += totals.requests;
            sum.errors += totals.errors;
            sum.rate += totals.rate;
        }
    }
    let rates = rates(view);
    let deployed = match &view.functions {
        Ok(entries) => format!("{} deployed", entries.len()),
        Err(_) => "registry unavailable".to_owned(),
    };
    let _ = write!(
        html,
        r#"<section>
<h2>Functions <small>{deployed}</small></h2>
<div class="scroll">
<table id="functions">
<thead>
<tr class="group"><th colspan="2"></th><th colspan="7">this host</th><th colspan="3">all live hosts</th></tr>
<tr><th>function</th><th>version</th><th class="n">req/s</th><th class="n">requests</th><th class="n">5xx</th><th class="n">p50</th><th class="n">p99</th><th class="n">instances</th><th class="n">live</th><th class="n">req/s</th><th class="n">requests</th><th class="n">5xx</th></tr>
</thead>
<tbody>
"#,
    );
    if names.is_empty() {
        html.push_str(
            r#"<tr><td colspan="12" class="empty">Nothing deployed yet: <code>goldfish deploy FILE --name NAME</code></td></tr>
"#,
        );
    }
    let none = FunctionFigures::default();
    for name in names {
        let figure = view.figures.get(name).unwrap_or(&none);
        let all = fleet.get(name).copied().unwrap_or_default();
        let (about, version, deployed) = match (entries.get(name), &view.functions) {
            (Some(e), _) => (
                format!(
                    "app {} · {} world",
                    e.app,
                    e.world.map_or("goldfish", |w| w.as_str())
                ),
                e.version.to_string(),
                format!(
                    r#"<span title="deployed {}">{} · {} ago</span>"#,
                    utc(e.deployed_at),
                    size(e.size),
                    ago(view.now_ms / 1000, e.deployed_at)
                ),
            ),
            (None, Ok(_)) => ("no longer deployed".to_owned(), "—".into(), String::new()),
            (None, Err(_)) => ("registry unavailable".to_owned(), "?".into(), String::new()),
        };
        let _ = writeln!(
            html,
            r#"<tr data-function="{name}"><td><b>{name}</b><div class="sub">{about}</div></td><td><b data-field="version">{version}</b><div class="sub">{deployed}</div></td><td class="n" data-field="rate">{rate}</td><td class="n" data-field="requests">{requests}</td><td class="n" data-field="errors">{errors}</td><td class="n" data-field="p50">{p50}</td><td class="n" data-field="p99">{p99}</td><td class="n" data-field="instances-created">{created}</td><td class="n" data-field="instances-live">{live}</td><td class="n fleet" data-field="fleet-rate">{fleet_rate}</td><td class="n fleet" data-field="fleet-requests">{fleet_requests}</td><td class="n fleet" data-field="fleet-errors">{fleet_errors}</td></tr>"#,
            name = escape(name),
            about = escape(&about),
            version = escape(&version),
            rate = rate(rates.get(name).copied().unwrap_or(0.0)),
            requests = count(figure.requests),
            errors = share(figure.errors, figure.requests),
            p50 = latency(figure.latency_quantile(0.5)),
            p99 = latency(figure.latency_quantile(0.99)),
            created = count(figure.instances_created),
            live = count(figure.instances_live),
            fleet_rate = rate(all.rate),
            fleet_requests = count(all.requests),
            fleet_errors = share(all.errors, all.requests),
        );
    }
    let _ = write!(
        html,
        r#"</tbody>
</table>
</div>
<p class="note">req/s: over the last minute. 5xx: share of requests answered with a server error. requests, 5xx, p50/p99 and instances: since this host started; p50/p99 are request latency from the <code>goldfish_request_duration_seconds</code> histogram. All live hosts: the sum over this host and every host whose heartbeat is fresh (every {beat} s); a host that stopped takes its figures with it.</p>
</section>
"#,
        beat = fleet::HEARTBEAT_INTERVAL.as_secs(),
    );
}

/// This host's request rate per function: its own rates are in its heartbeat.
fn rates(view: &View) -> BTreeMap<&str, f64> {
    view.this
        .functions
        .iter()
        .map(|(name, totals)| (name.as_str(), totals.rate))
        .collect()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How long ago `then` was, both in seconds since the epoch: `3 s`, `12 min`, `5 h`, `2 d`.
fn ago(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// `1234567` → `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn rate(per_second: f64) -> String {
    if per_second <= 0.0 {
        "0".to_owned()
    } else if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

/// `errors` out of `total` as a percentage; `—` with no requests.
fn share(errors: u64, total: u64) -> String {
    if total == 0 {
        return "—".to_owned();
    }
    let percent = errors as f64 * 100.0 / total as f64;
    if errors == 0 {
        "0 %".to_owned()
    } else if percent < 10.0 {
        format!("{percent:.1} %")
    } else {
        format!("{percent:.0} %")
    }
}

fn latency(quantile: Option<Quantile>) -> String {
    match quantile {
        None => "—".to_owned(),
        Some(Quantile::Within(d)) => duration(d),
        Some(Quantile::Above(d)) => format!("&gt; {}", duration(d)),
    }
}

/// `85 µs`, `1.2 ms`, `340 ms`, `2.50 s`.
fn duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 100_000.0 {
        format!("{:.1} ms", micros / 1000.0)
    } else if micros < 1e6 {
        format!("{:.0} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// The logo: a goldfish, inline (the page loads nothing).
const FISH: &str = r##"<svg width="26" height="20" viewBox="0 0 26 20" aria-hidden="true"><path d="M18 10l7-7v14z" fill="#f5a623"/><ellipse cx="11" cy="10" rx="10" ry="7" fill="#e8780c"/><circle cx="5.5" cy="8.5" r="1.4" fill="#fff"/></svg>"##;

const STYLE: &str = r#"
:root { --ink: #1d2330; --muted: #6b7385; --line: #e3e6ec; --bg: #f6f7f9; --gold: #e8780c;
        --ok: #1f8a4c; --warn: #b7791f; --bad: #c0392b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #fff; border-bottom: 3px solid var(--gold); padding: 14px 24px; }
header h1 { margin: 0; font-size: 22px; letter-spacing: .2px; }
header p { margin: 2px 0 0; color: var(--muted); }
header h1 svg { vertical-align: -3px; margin-right: 4px; }
main { padding: 6px 24px 12px; }
h2 { font-size: 16px; margin: 22px 0 8px; }
h2 small { color: var(--muted); font-weight: normal; margin-left: 6px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line);
        border-radius: 6px; overflow: hidden; }
th, td { padding: 6px 8px; text-align: left; border-bottom: 1px solid var(--line);
         vertical-align: top; white-space: nowrap; }
th { font-size: 12px; font-weight: 600; color: var(--muted); background: #fafbfc; }
tr.group th { border-bottom: none; padding-bottom: 0; text-align: center; font-weight: normal; }
#functions tr.group th + th,
#functions tbody td:nth-child(3), #functions thead tr + tr th:nth-child(3),
#functions tbody td:nth-child(10), #functions thead tr + tr th:nth-child(10) {
  border-left: 1px solid var(--line); }
tbody tr:last-child td { border-bottom: none; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
.sub { color: var(--muted); font-size: 12px; }
.fleet { background: #fffaf3; }
tr.stale td { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; color: #fff; background: var(--ok); }
.badge.this { background: var(--gold); }
.badge.stale { background: var(--warn); }
.badge.down { background: var(--bad); }
.store { margin: 16px 0 0; padding: 10px 14px; background: #fff; border: 1px solid var(--line);
         border-radius: 6px; }
.store.down { border-color: var(--bad); background: #fdf1f0; }
.note { color: var(--muted); font-size: 12px; margin: 6px 2px; white-space: normal; }
.empty { color: var(--muted); text-align: center; padding: 16px; }
a { color: #1c5fb8; text-decoration: none; }
a:hover { text-decoration: underline; }
code { font-size: 12px; background: #eef0f4; padding: 1px 4px; border-radius: 3px; }
footer { padding: 4px 24px 20px; color: var(--muted); font-size: 12px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View {
            now_ms: 1_800_000_000_000,
            this: Heartbeat {
                id: "aaaaaaaaaaaa".into(),
                hostname: "web-1".into(),
                address: "127.0.0.1:8080".into(),
                version: "0.1.0".into(),
                started_at: 1_800_000_000 - 300,
                seen_at_ms: 1_800_000_000_000,
                ..Heartbeat::default()
            },
            store: "redis at redis://127.0.0.1:6379".into(),
            store_ping: Ok(Duration::from_micros(250)),
            hosts: Ok(Vec::new()),
            functions: Ok(Vec::new()),
            figures: BTreeMap::new(),
        }
    }

    #[test]
    fn everything_printed_is_escaped() {
        let mut view = view();
        let other = Heartbeat {
            id: "b\"><script>alert(1)</script>".into(),
            hostname: "<img src=x>".into(),
            address: "x\" onmouseover=\"alert(1)".into(),
            seen_at_ms: view.now_ms,
            ..Heartbeat::default()
        };
        view.hosts = Ok(vec![other]);
        view.store_ping = Err("<b>boom</b> & more".into());
        let html = render(&view);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("\" onmouseover"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;boom&lt;/b&gt; &amp; more"));
    }

    #[test]
    fn with_the_store_down_the_page_says_so_and_still_shows_this_host() {
        let mut view = view();
        view.store_ping = Err("store unavailable: connection refused".into());
        view.hosts = Err("store unavailable: connection refused".into());
        view.functions = Err("store unavailable: connection refused".into());
        view.figures.insert(
            "probe".into(),
            FunctionFigures {
                requests: 3,
                ..FunctionFigures::default()
            },
        );
        let html = render(&view);
        assert!(html.contains("Redis is down"));
        assert!(html.contains(r#"data-host="aaaaaaaaaaaa""#));
        assert!(html.contains(r#"data-function="probe""#));
        assert!(html.contains("registry unavailable"));
    }

    #[test]
    fn stale_hosts_are_marked_and_left_out_of_the_fleet_figures() {
        let mut view = view();
        let mut functions = BTreeMap::new();
        functions.insert(
            "probe".to_owned(),
            FunctionTotals {
                requests: 7,
                errors: 0,
                rate: 0.0,
            },
        );
        let fresh = Heartbeat {
            id: "fresh".into(),
            seen_at_ms: view.now_ms - 1000,
            functions: functions.clone(),
            ..Heartbeat::default()
        };
        let stale = Heartbeat {
            id: "stale".into(),
            seen_at_ms: view.now_ms - 20_000,
            functions,
            ..Heartbeat::default()
        };
        view.hosts = Ok(vec![fresh, stale]);
        view.functions = Ok(vec![FunctionEntry {
            name: "probe".into(),
            app: "probe".into(),
            version: 1,
            digest: "0".repeat(64),
            size: 1000,
            deployed_at: 1_800_000_000 - 60,
            world: None,
            memory_mib: None,
            cpu_ms: None,
            kv_ops: None,
            kv_bytes: None,
            by: None,
        }]);
        let html = render(&view);
        assert!(html.contains(r#"data-host="stale" data-address="" class="stale""#));
        assert!(html.contains(r#"data-host="fresh" data-address="" class="live""#));
        assert!(html.contains(r#"data-field="fleet-requests">7<"#), "{html}");
    }

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(share(1, 200), "0.5 %");
        assert_eq!(share(0, 0), "—");
        assert_eq!(duration(Duration::from_micros(85)), "85 µs");
        assert_eq!(duration(Duration::from_micros(1_250)), "1.2 ms");
        assert_eq!(duration(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(ago(1000, 1000 - 125), "2 min");
    }
}
