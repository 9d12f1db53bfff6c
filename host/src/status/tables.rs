//! The status page's two tables: hosts, and functions with this host's and every live host's
//! figures.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::View;
use super::format::{ago, count, escape, latency, rate, share};
use crate::cli::output::{size, utc};
use crate::fleet::{self, FunctionFigures, FunctionTotals, Heartbeat};
use crate::metrics::UNKNOWN_FUNCTION;
use crate::registry::FunctionEntry;

/// The hosts table; returns the heartbeats that count for the fleet's figures (this host's,
/// fresh, and every other host that is not stale).
pub(super) fn render_hosts(html: &mut String, view: &View) -> Vec<Heartbeat> {
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

pub(super) fn render_functions(html: &mut String, view: &View, live: &[Heartbeat]) {
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
