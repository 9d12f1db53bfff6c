//! `GET /v1/openapi.json` against the real thing: every status code the document promises for
//! every operation is one a real host answers some real request with, every answer a host gives
//! is documented, and every JSON body has what its documented schema requires.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use support::{Host, Redis, TOKEN, get_json, guest};

/// The document, and what the hosts were seen to answer.
struct Check {
    doc: Value,
    /// (path template, method) → statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<String>>,
    problems: Vec<String>,
}

impl Check {
    async fn fetch(host: &Host) -> Check {
        let (status, doc) = get_json(&format!("{}/v1/openapi.json", host.url)).await;
        assert_eq!(status, 200, "the document is served without a token: {doc}");
        Check {
            doc,
            seen: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Sends `request`, made for the operation at `template` with `method`, and checks its
    /// answer against the document.
    async fn call(&mut self, template: &str, method: &str, request: RequestBuilder) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16().to_string();
        let body = response.text().await.expect("body");
        let what = format!("{method} {template} → {status}");
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        if operation.is_null() {
            self.problems
                .push(format!("{what}: operation not documented"));
            return;
        }
        let documented = &operation["responses"][&status];
        let response_doc = if documented.is_null() {
            &operation["responses"]["default"]
        } else {
            documented
        };
        if response_doc.is_null() {
            self.problems
                .push(format!("{what}: status not documented; body {body}"));
            return;
        }
        if let Some(schema) = response_doc["content"]["application/json"].get("schema") {
            match serde_json::from_str::<Value>(&body) {
                Ok(value) => {
                    if let Err(e) = conforms(&self.doc, schema, &value, "body") {
                        self.problems.push(format!("{what}: {e}; body {body}"));
                    }
                }
                Err(_) => self
                    .problems
                    .push(format!("{what}: documented as JSON, got {body:?}")),
            }
        }
        self.seen
            .entry((template.to_owned(), method.to_lowercase()))
            .or_default()
            .insert(status);
    }

    /// Every documented status of every operation must have been seen.
    fn finish(mut self) {
        let paths = self.doc["paths"].as_object().cloned().unwrap_or_default();
        let mut ids = BTreeSet::new();
        for (template, item) in &paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let id = operation["operationId"].as_str().unwrap_or_default();
                if !ids.insert(id.to_owned()) {
                    self.problems
                        .push(format!("operationId `{id}` is not unique"));
                }
                let seen = self
                    .seen
                    .get(&(template.clone(), method.clone()))
                    .cloned()
                    .unwrap_or_default();
                let responses = operation["responses"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for status in responses.keys() {
                    let produced = if status == "default" {
                        // The function's own answer: any status not documented otherwise.
                        seen.iter().any(|s| !responses.contains_key(s))
                    } else {
                        seen.contains(status)
                    };
                    if !produced {
                        self.problems.push(format!(
                            "{method} {template}: documented {status} never answered by a host"
                        ));
                    }
                }
            }
        }
        assert!(
            self.problems.is_empty(),
            "the document and the hosts disagree:\n{}",
            self.problems.join("\n")
        );
    }
}

/// Whether `value` has what `schema` requires: types, required properties, recursively through
/// `$ref`, `allOf`, `properties` and `items`.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: unsupported $ref {reference}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref {reference} points nowhere"));
        }
        return conforms(doc, target, value, at);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        conforms(doc, part, value, at)?;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
        return Err(format!("{at}: expected {types:?}, got {value}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: required `{name}` is missing"));
            }
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(field) = object.get(name) {
                conforms(doc, property, field, &format!("{at}.{name}"))?;
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// `bytes` with a custom section of `padding` bytes appended: the same component, larger.
fn padded(bytes: &[u8], padding: usize) -> Vec<u8> {
    let name = b"padding";
    let mut rest = 1 + name.len() + padding;
    let mut out = bytes.to_vec();
    out.push(0);
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + padding, 0);
    out
}

/// A client that never reuses a connection: a host closes the connection of an upload it
/// refuses unread, and a pooled client could send the next request down that closing
/// connection.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

const INVOKE: &str = "/fn/{name}/{path}";
const INVOKE_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One request per admin operation, each with the right token and a valid, deployed name: what
/// a host that refuses the caller (403, 429) or cannot reach Redis (503) answers every one with.
async fn every_admin_operation(check: &mut Check, host: &Host, token: &str) {
    let url = |path: &str| format!("{}{path}", host.url);
    let http = client();
    let calls = [
        ("/v1/functions/{name}", "PUT", url("/v1/functions/thing")),
        ("/v1/functions", "GET", url("/v1/functions")),
        ("/v1/functions/{name}", "GET", url("/v1/functions/thing")),
        (
            "/v1/functions/{name}/versions",
            "GET",
            url("/v1/functions/thing/versions"),
        ),
        (
            "/v1/functions/{name}/rollback",
            "POST",
            url("/v1/functions/thing/rollback?to=1"),
        ),
        (
            "/v1/functions/{name}/errors",
            "GET",
            url("/v1/functions/thing/errors"),
        ),
        ("/v1/functions/{name}", "DELETE", url("/v1/functions/thing")),
    ];
    for (template, method, url) in calls {
        let method_value = Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = http.request(method_value, url).bearer_auth(token);
        if method == "PUT" {
            request = request.body(guest("recycle-probe"));
        }
        check.call(template, method, request).await;
    }
}

#[tokio::test]
async fn every_documented_status_and_schema_matches_what_real_hosts_answer() {
    let mut redis = Redis::start();
    let host = Host::start_tuned(
        &redis,
        &[
            "--max-component-bytes",
            "2000000",
            "--max-body-bytes",
            "1000",
            "--timeout-ms",
            "1000",
        ],
    );
    let mut check = Check::fetch(&host).await;
    let http = client();
    let url = |path: &str| format!("{}{path}", host.url);
    let admin = |method: Method, path: &str| http.request(method, url(path)).bearer_auth(TOKEN);

    // The document itself.
    check
        .call("/v1/openapi.json", "GET", http.get(url("/v1/openapi.json")))
        .await;

    // Deploys: accepted, and every way one is refused.
    let deploy = |name: &str, bytes: Vec<u8>| {
        admin(Method::PUT, &format!("/v1/functions/{name}"))
            .header("content-type", "application/wasm")
            .body(bytes)
    };
    let put = "/v1/functions/{name}";
    check
        .call(put, "PUT", deploy("mis", guest("misbehave")))
        .await;
    check
        .call(put, "PUT", deploy("thing", guest("recycle-probe")))
        .await;
    check
        .call(put, "PUT", deploy("thing", guest("misbehave")))
        .await;
    check
        .call(put, "PUT", deploy("Bad_Name", guest("misbehave")))
        .await;
    check
        .call(put, "PUT", deploy("world", guest("wrong-world")))
        .await;
    let big = padded(&guest("recycle-probe"), 2_100_000);
    check.call(put, "PUT", deploy("big", big)).await;
    check
        .call(
            put,
            "PUT",
            http.put(url("/v1/functions/x")).body(guest("misbehave")),
        )
        .await;

    // Reading and changing functions, found and not.
    let one = "/v1/functions/{name}";
    let versions = "/v1/functions/{name}/versions";
    let rollback = "/v1/functions/{name}/rollback";
    check
        .call("/v1/functions", "GET", admin(Method::GET, "/v1/functions"))
        .await;
    check
        .call("/v1/functions", "GET", http.get(url("/v1/functions")))
        .await;
    check
        .call(one, "GET", admin(Method::GET, "/v1/functions/mis"))
        .await;
    check
        .call(one, "GET", admin(Method::GET, "/v1/functions/ghost"))
        .await;
    check
        .call(one, "GET", admin(Method::GET, "/v1/functions/Bad_Name"))
        .await;
    check
        .call(one, "GET", http.get(url("/v1/functions/mis")))
        .await;
    check
        .call(
            versions,
            "GET",
            admin(Method::GET, "/v1/functions/thing/versions"),
        )
        .await;
    check
        .call(
            versions,
            "GET",
            admin(Method::GET, "/v1/functions/ghost/versions"),
        )
        .await;
    check
        .call(
            versions,
            "GET",
            admin(Method::GET, "/v1/functions/Bad_Name/versions"),
        )
        .await;
    check
        .call(
            versions,
            "GET",
            http.get(url("/v1/functions/thing/versions")),
        )
        .await;
    let errors = "/v1/functions/{name}/errors";
    for (path, authorized) in [
        ("/v1/functions/mis/errors", true),
        ("/v1/functions/ghost/errors", true),
        ("/v1/functions/Bad_Name/errors", true),
        ("/v1/functions/mis/errors", false),
    ] {
        let request = if authorized {
            admin(Method::GET, path)
        } else {
            http.get(url(path))
        };
        check.call(errors, "GET", request).await;
    }
    check
        .call(
            rollback,
            "POST",
            admin(Method::POST, "/v1/functions/thing/rollback"),
        )
        .await;
    check
        .call(
            rollback,
            "POST",
            admin(Method::POST, "/v1/functions/thing/rollback"),
        )
        .await;
    check
        .call(
            rollback,
            "POST",
            admin(Method::POST, "/v1/functions/thing/rollback?to=9"),
        )
        .await;
    check
        .call(
            rollback,
            "POST",
            admin(Method::POST, "/v1/functions/thing/rollback?to=x"),
        )
        .await;
    check
        .call(
            rollback,
            "POST",
            admin(Method::POST, "/v1/functions/ghost/rollback"),
        )
        .await;
    check
        .call(
            rollback,
            "POST",
            http.post(url("/v1/functions/thing/rollback")),
        )
        .await;
    check
        .call(one, "DELETE", http.delete(url("/v1/functions/mis")))
        .await;
    check
        .call(
            one,
            "DELETE",
            admin(Method::DELETE, "/v1/functions/Bad_Name"),
        )
        .await;
    check
        .call(one, "DELETE", admin(Method::DELETE, "/v1/functions/ghost"))
        .await;
    check
        .call(put, "PUT", deploy("gone", guest("recycle-probe")))
        .await;
    check
        .call(one, "DELETE", admin(Method::DELETE, "/v1/functions/gone"))
        .await;

    // Invocations, every documented method: the function's answer and each way a call fails.
    for method in INVOKE_METHODS {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let call = |path: &str| http.request(method.clone(), url(path));
        let name = method.as_str();
        check.call(INVOKE, name, call("/fn/mis/echo")).await;
        check.call(INVOKE, name, call("/fn/ghost/echo")).await;
        check
            .call(INVOKE, name, call("/fn/mis/echo").body(vec![b'x'; 2000]))
            .await;
        check.call(INVOKE, name, call("/fn/mis/trap")).await;
        check.call(INVOKE, name, call("/fn/mis/bad-status")).await;
        check.call(INVOKE, name, call("/fn/mis/spin")).await;
    }
    // The failures just answered, as the operator reads them.
    check
        .call(
            "/v1/functions/{name}/errors",
            "GET",
            admin(Method::GET, "/v1/functions/mis/errors"),
        )
        .await;

    // A host without an admin token refuses every admin call.
    let closed = Host::start_with(&["--redis", &redis.url()]);
    every_admin_operation(&mut check, &closed, TOKEN).await;

    // A host that saw too many wrong tokens from this address refuses it even the right one.
    let locked = Host::start(&redis);
    for _ in 0..goldfish::auth_failures::MAX_FAILURES {
        let response = client()
            .get(format!("{}/v1/functions", locked.url))
            .bearer_auth("a-wrong-guess")
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 401);
    }
    every_admin_operation(&mut check, &locked, TOKEN).await;

    // Without Redis, every admin call and every lookup of a name this host has not seen fail
    // with 503.
    redis.stop();
    every_admin_operation(&mut check, &host, TOKEN).await;
    for method in INVOKE_METHODS {
        let request = http.request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            url(&format!("/fn/never-seen-{}/x", method.to_lowercase())),
        );
        check.call(INVOKE, method, request).await;
    }

    check.finish();
}
