//! The `goldfish stress` flags ([`StressArgs`]), `--duration` parsing, and the CLI entry
//! ([`command`]): run, print the text report, write `--report` and `--plot`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::{DEFAULT_CONCURRENCY, StressConfig, StressReport, run, write_svg};

/// `goldfish stress`: load one function on one or more hosts and check that it was recycled.
#[derive(clap::Args, Debug, Clone)]
pub struct StressArgs {
    /// Base URL of a host (http://HOST:PORT). Comma-separated or repeated for several; requests go
    /// round robin over them.
    #[arg(
        long = "target",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub targets: Vec<String>,
    /// The deployed function to call; the freshness checks expect the recycle-probe.
    #[arg(long, value_name = "NAME")]
    pub function: String,
    /// Path under /fn/NAME of each load request.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP method of each load request.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Stop after N requests [default: 10000, or 10000000 when --duration is given].
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Stop sending after this long (e.g. 30s, 2m, 1m30s, 500ms), or after --requests,
    /// whichever comes first.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// After the run, drive a trivial native server this long with the same workers, to tell
    /// whether this tool limited the run (it says so below 3x headroom); 0 skips it.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "2s")]
    pub generator_check: Duration,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Also draw throughput, live instances and latency to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

impl StressConfig {
    fn from_args(args: &StressArgs) -> StressConfig {
        StressConfig {
            targets: args.targets.clone(),
            function: args.function.clone(),
            path: args.path.clone(),
            method: args.method.clone(),
            requests: args.requests,
            duration: args.duration,
            concurrency: args.concurrency,
            generator_check: (!args.generator_check.is_zero()).then_some(args.generator_check),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// The CLI entry: runs, prints the text report to stdout, writes `--report` and `--plot`, and
/// returns whether every check passed (the caller turns `false` into a failing exit code).
pub async fn command(args: StressArgs) -> anyhow::Result<bool> {
    let report = run(&StressConfig::from_args(&args)).await?;
    print!("{}", report.render());
    if let Some(path) = &args.report {
        write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
        write_svg(&report, path)?;
    }
    Ok(report.passed())
}

/// Writes `report` as pretty JSON to `path` (overwriting it).
pub fn write_json(report: &StressReport, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("serialising the report")?;
    std::fs::write(path, json + "\n")
        .with_context(|| format!("writing the report to {}", path.display()))
}

/// A `--duration` that is not `<number><unit>...` with units ms, s, m, h.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a duration: expected e.g. 30s, 2m, 1m30s, 500ms or 1h")]
    Invalid(String),
}

/// Parses `30s`, `2m`, `1h`, `500ms`, `1m30s`, `1.5s`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(text.to_owned());
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let unit_end = rest[number_end..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| number_end + i);
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        let seconds_per_unit = match &rest[number_end..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        let part = Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| invalid())?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_combinations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn malformed_durations_are_refused() {
        assert_eq!(parse_duration(" "), Err(DurationError::Empty));
        for text in ["s", "10x", "1m30", "-5s", "1..2s", "ten seconds", "-1"] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::Invalid(text.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn stress_args_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            stress: StressArgs,
        }
        let cli = Cli::try_parse_from([
            "goldfish",
            "--target",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--function",
            "probe",
            "--duration",
            "1m30s",
        ])
        .unwrap();
        assert_eq!(
            cli.stress.targets,
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(cli.stress.duration, Some(Duration::from_secs(90)));
        assert_eq!(cli.stress.generator_check, Duration::from_secs(2));
        let off = Cli::try_parse_from([
            "goldfish",
            "--target",
            "http://127.0.0.1:1",
            "--function",
            "probe",
            "--generator-check",
            "0",
        ])
        .unwrap();
        assert_eq!(
            StressConfig::from_args(&off.stress).generator_check,
            None,
            "0 skips the check"
        );
        assert_eq!(
            (
                cli.stress.concurrency,
                cli.stress.requests,
                cli.stress.method.as_str()
            ),
            (32, None, "POST")
        );
        assert!(
            Cli::try_parse_from(["goldfish", "--function", "probe"]).is_err(),
            "--target is required"
        );
    }
}
