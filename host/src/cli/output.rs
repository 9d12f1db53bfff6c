//! How the client commands print for people: aligned tables, sizes in KiB/MiB, times in UTC,
//! digests shortened; and the JSON they print for scripts (`--json`).

use std::io::Write;

use super::client::Answer;
use crate::admin::VersionList;
use crate::failures::FailureList;
use crate::registry::FunctionEntry;

/// Hex digits of a digest shown in tables: enough to tell versions apart at a glance.
const SHORT_DIGEST: usize = 12;

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Pretty JSON with a final newline.
pub fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// `goldfish ls`.
pub fn functions_table(entries: &[FunctionEntry]) -> String {
    if entries.is_empty() {
        return "no functions deployed\n".to_owned();
    }
    let mut entries: Vec<&FunctionEntry> = entries.iter().collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.app.clone(),
                e.version.to_string(),
                world(e),
                size(e.size),
                utc(e.deployed_at),
                short_digest(&e.digest).to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "APP", "VERSION", "WORLD", "SIZE", "DEPLOYED", "DIGEST",
        ],
        rows,
    )
}

/// `goldfish show`.
pub fn function_details(e: &FunctionEntry) -> String {
    let mut lines = vec![
        ("name", e.name.clone()),
        ("app", e.app.clone()),
        ("version", e.version.to_string()),
        ("world", world(e)),
        ("size", format!("{} ({} bytes)", size(e.size), e.size)),
        ("digest", format!("sha256:{}", e.digest)),
        ("deployed", deployed_by(e)),
    ];
    if let Some(mib) = e.memory_mib {
        lines.push(("memory", format!("{mib} MiB per instance")));
    }
    if let Some(ms) = e.cpu_ms {
        lines.push(("cpu", format!("{ms} ms per call")));
    }
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 2;
    lines
        .into_iter()
        .map(|(key, value)| format!("{:<width$}{value}\n", format!("{key}:")))
        .collect()
}

/// `goldfish versions`.
pub fn versions_table(list: &VersionList) -> String {
    let rows = list
        .versions
        .iter()
        .map(|v| {
            let e = &v.entry;
            vec![
                if v.current { "*" } else { "" }.to_owned(),
                e.version.to_string(),
                utc(e.deployed_at),
                e.by.clone().unwrap_or_else(|| "-".to_owned()),
                size(e.size),
                world(e),
                e.app.clone(),
                short_digest(&e.digest).to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "", "VERSION", "DEPLOYED", "BY", "SIZE", "WORLD", "APP", "DIGEST",
        ],
        rows,
    )
}

/// `goldfish errors`: one failure a row, the detail last and whole.
pub fn failures_table(list: &FailureList) -> String {
    if list.errors.is_empty() {
        return format!("no failures recorded for {}\n", list.name);
    }
    let rows = list
        .errors
        .iter()
        .map(|f| {
            vec![
                utc(f.at_ms / 1000),
                f.status.to_string(),
                f.class.as_str().to_owned(),
                f.request_id.clone(),
                f.host.clone(),
                f.detail.clone(),
            ]
        })
        .collect();
    table(
        &["WHEN", "STATUS", "CLASS", "REQUEST", "HOST", "DETAIL"],
        rows,
    )
}

/// `goldfish deploy`.
pub fn deployed(e: &FunctionEntry) -> String {
    format!(
        "deployed {} version {} (app {}, {} world, {}, {})\n",
        e.name,
        e.version,
        e.app,
        world(e),
        size(e.size),
        short_digest(&e.digest)
    )
}

/// `goldfish invoke`: the body, after the status line and headers with `-i`.
pub fn invocation(answer: &Answer, include: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if include {
        out.extend_from_slice(format!("HTTP {} {}\n", answer.status, answer.reason).as_bytes());
        for (name, value) in &answer.headers {
            out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
        out.push(b'\n');
    }
    out.extend_from_slice(&answer.body);
    out
}

/// The first hex digits of a digest.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..SHORT_DIGEST).unwrap_or(digest)
}

fn world(e: &FunctionEntry) -> String {
    // Entries written before worlds existed are goldfish-world components.
    e.world.map_or("goldfish", |w| w.as_str()).to_owned()
}

fn deployed_by(e: &FunctionEntry) -> String {
    match &e.by {
        Some(by) => format!("{} by {by}", utc(e.deployed_at)),
        None => utc(e.deployed_at),
    }
}

/// `532 B`, `12.3 KiB`, `4.5 MiB`.
pub fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

/// Seconds since the Unix epoch as `2026-01-31 23:59:59 UTC`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(532), "532 B");
        assert_eq!(size(12_595), "12.3 KiB");
        assert_eq!(size(4_718_592), "4.5 MiB");
    }

    #[test]
    fn tables_align_every_column_but_the_last() {
        let out = table(
            &["NAME", "V", "DIGEST"],
            vec![
                vec!["cart".into(), "12".into(), "abc".into()],
                vec!["checkout".into(), "3".into(), "d".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME      V   DIGEST\ncart      12  abc\ncheckout  3   d\n"
        );
    }
}
