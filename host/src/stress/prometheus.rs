//! Reading a host's `/metrics` page: a parser for the Prometheus text exposition format and the
//! few queries `goldfish stress` asks of it.
//!
//! Only what the format needs for reading values is implemented: `# HELP`/`# TYPE` and other
//! comments are skipped, label values may contain `\\`, `\"` and `\n` escapes, a trailing
//! timestamp is ignored. A series that a host has never touched may be missing from the page;
//! the queries treat a missing series as 0, as Prometheus clients do.

/// A line of a `/metrics` page that is not a comment, a blank line or a well-formed sample.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("metrics line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number in the page.
    pub line: usize,
    pub reason: &'static str,
    /// The offending line, for the person reading the error.
    pub text: String,
}

/// One series' value at scrape time: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order the page lists them.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every sample of one scrape of one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses a whole page.
    pub fn parse(page: &str) -> Result<Scrape, ParseError> {
        let mut samples = Vec::new();
        for (index, line) in page.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(|reason| ParseError {
                line: index + 1,
                reason,
                text: line.to_owned(),
            })?;
            samples.push(sample);
        }
        Ok(Scrape { samples })
    }

    /// The sum of every series called `name` whose labels include all of `matchers`; 0 when
    /// there is none (an untouched counter is not exported). With no matchers this sums over
    /// every label combination, e.g. all `status` series of a request counter.
    pub fn sum(&self, name: &str, matchers: &[(&str, &str)]) -> f64 {
        self.matching(name, matchers)
            .map(|sample| sample.value)
            .sum()
    }

    /// The value of the first series called `name` matching `matchers`, or `None` when the page
    /// has none. For gauges where "absent" and "zero" mean different things (memory).
    pub fn value(&self, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, matchers)
            .map(|sample| sample.value)
            .next()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        matchers: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && matchers
                    .iter()
                    .all(|(key, value)| sample.label(key) == Some(value))
        })
    }
}

/// Parses `name{labels} value [timestamp]`; the error is the reason, the caller adds the line.
fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value after the metric name")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("invalid metric name");
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value: f64 = value.parse().map_err(|_| "value is not a number")?;
    // An optional timestamp may follow; nothing else may.
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| "text after the value is not a timestamp")?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `l1="v1",l2="v2"}` (the opening brace already consumed) into `labels` and returns the
/// text after the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let equals = rest.find('=').ok_or("label without `=`")?;
        let key = rest[..equals].trim();
        if !is_label_name(key) {
            return Err("invalid label name");
        }
        rest = rest[equals + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value is not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let closing = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((index, '"')) => break index,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    _ => return Err("invalid escape in label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = rest[closing + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label");
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"
# HELP goldfish_requests_total Requests answered, by function and status.
# TYPE goldfish_requests_total counter
goldfish_requests_total{function="probe",status="200"} 1500
goldfish_requests_total{function="probe",status="500"} 3
goldfish_requests_total{function="other",status="200"} 7
# TYPE goldfish_instances_live gauge
goldfish_instances_live 0
goldfish_instances_created_total{function="probe"} 1503
goldfish_request_duration_seconds_bucket{function="probe",le="+Inf"} 1503
process_resident_memory_bytes 5.24288e+07
"#;

    #[test]
    fn sum_adds_every_status_of_one_function() {
        let scrape = Scrape::parse(PAGE).unwrap();
        assert_eq!(
            scrape.sum("goldfish_requests_total", &[("function", "probe")]),
            1503.0
        );
        assert_eq!(scrape.sum("goldfish_requests_total", &[]), 1510.0);
        assert_eq!(
            scrape.sum(
                "goldfish_requests_total",
                &[("function", "probe"), ("status", "500")]
            ),
            3.0
        );
    }

    #[test]
    fn absent_series_sum_to_zero_and_have_no_value() {
        let scrape = Scrape::parse(PAGE).unwrap();
        assert_eq!(
            scrape.sum("goldfish_instances_dropped_total", &[("function", "probe")]),
            0.0
        );
        assert_eq!(
            scrape.sum(
                "goldfish_instances_created_total",
                &[("function", "nobody")]
            ),
            0.0
        );
        assert_eq!(scrape.value("nothing_here", &[]), None);
        assert_eq!(
            Scrape::parse("")
                .unwrap()
                .sum("goldfish_instances_live", &[]),
            0.0
        );
    }

    #[test]
    fn unlabelled_gauges_and_float_exponents_parse() {
        let scrape = Scrape::parse(PAGE).unwrap();
        assert_eq!(scrape.value("goldfish_instances_live", &[]), Some(0.0));
        assert_eq!(
            scrape.value("process_resident_memory_bytes", &[]),
            Some(52_428_800.0)
        );
    }

    #[test]
    fn special_values_timestamps_and_spacing_parse() {
        let page =
            "a_bucket{le=\"+Inf\"} +Inf\nb NaN 1712345678000\nc { x = \"1\" , } -Inf\n  d\t2.5  \n";
        let scrape = Scrape::parse(page).unwrap();
        assert_eq!(
            scrape.value("a_bucket", &[("le", "+Inf")]),
            Some(f64::INFINITY)
        );
        assert!(scrape.value("b", &[]).is_some_and(f64::is_nan));
        assert_eq!(scrape.value("c", &[("x", "1")]), Some(f64::NEG_INFINITY));
        assert_eq!(scrape.value("d", &[]), Some(2.5));
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let scrape = Scrape::parse(r#"m{path="a\"b\\c\nd",other="x,y}z"} 1"#).unwrap();
        assert_eq!(scrape.samples[0].label("path"), Some("a\"b\\c\nd"));
        assert_eq!(scrape.samples[0].label("other"), Some("x,y}z"));
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (page, reason) in [
            ("ok 1\nbroken", "no value after the metric name"),
            ("ok 1\nm{a=\"1} 2", "unterminated label value"),
            ("ok 1\nm{a=\"1\" 2", "expected `,` or `}` after a label"),
            ("ok 1\nm{a=1} 2", "label value is not quoted"),
            (
                "ok 1\nm{a=\"1\" b=\"2\"} 2",
                "expected `,` or `}` after a label",
            ),
            ("ok 1\nm one", "value is not a number"),
            ("ok 1\nm 1 2 3", "unexpected text after the timestamp"),
            ("ok 1\n9m 1", "invalid metric name"),
            ("ok 1\nm{a=\"\\t\"} 1", "invalid escape in label value"),
        ] {
            let error = Scrape::parse(page).unwrap_err();
            assert_eq!((error.line, error.reason), (2, reason), "{page:?}");
        }
    }
}
