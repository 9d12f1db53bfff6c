//! The status page's look: the logo and the stylesheet, inline (the page loads nothing).

/// The logo: a goldfish, inline (the page loads nothing).
pub(super) const FISH: &str = r##"<svg width="26" height="20" viewBox="0 0 26 20" aria-hidden="true"><path d="M18 10l7-7v14z" fill="#f5a623"/><ellipse cx="11" cy="10" rx="10" ry="7" fill="#e8780c"/><circle cx="5.5" cy="8.5" r="1.4" fill="#fff"/></svg>"##;

pub(super) const STYLE: &str = r#"
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
