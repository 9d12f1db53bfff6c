//! The status page's HTML: the page around its parts, the store's state, and (in
//! [`super::tables`]) the hosts and functions tables.

use std::fmt::Write as _;

use super::View;
use super::format::{ago, duration, escape};
use super::style::{FISH, STYLE};
use super::tables::{render_functions, render_hosts};
use crate::cli::output::utc;

/// The page reloads itself this often (a `<meta>` refresh: no script).
const REFRESH_SECONDS: u32 = 5;

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::fleet::{FunctionFigures, FunctionTotals, Heartbeat};
    use crate::registry::FunctionEntry;

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
}
