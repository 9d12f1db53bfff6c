//! The client commands of the `goldfish` binary: `deploy`, `ls`, `show`, `invoke`, `rm`,
//! `versions`, `rollback`, `errors`, each one admin or invoke API call to a running host
//! ([`client`]), printed for people by default ([`output`]) or as the API's JSON with `--json`.

pub mod client;
pub mod output;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use self::client::{Client, Upload};
use crate::admin::VersionList;
use crate::failures::FailureList;
use crate::registry::FunctionEntry;

/// The client commands, flattened into the binary's subcommands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Deploy a component as the newest version of a function (creating or replacing it).
    Deploy(DeployArgs),
    /// List deployed functions.
    Ls(ListArgs),
    /// Show one function's current entry.
    Show(NameArgs),
    /// Call a function and print its answer; exits non-zero on a 4xx or 5xx status.
    Invoke(InvokeArgs),
    /// Delete a function with all its versions and its recent failures.
    Rm(NameArgs),
    /// List a function's kept versions, newest first, the current one marked `*`.
    Versions(NameArgs),
    /// Point a function back at one of its kept versions (default: the one before the current).
    Rollback(RollbackArgs),
    /// List a function's recent failures (its 5xx answers) from every host, newest first, with
    /// the detail its callers are not shown.
    Errors(NameArgs),
}

/// Which host to talk to, and how to print.
#[derive(Args)]
pub struct Target {
    /// The host's base URL.
    #[arg(long, env = "GOLDFISH_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin token (the same variable `goldfish serve` reads).
    #[arg(long, env = "GOLDFISH_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The component file (`.wasm`).
    pub file: PathBuf,
    /// The function's name: 1 to 63 lowercase letters, digits and dashes.
    #[arg(long)]
    pub name: String,
    /// The app whose key-value data the function shares (default: the name).
    #[arg(long)]
    pub app: Option<String>,
    /// Linear memory limit per instance, in MiB (at most the host's `--memory-mib`).
    #[arg(long)]
    pub memory_mib: Option<u32>,
    /// CPU budget per call, in milliseconds (at most the host's `--cpu-ms`).
    #[arg(long)]
    pub cpu_ms: Option<u32>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct NameArgs {
    /// The function's name.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The function's name.
    pub name: String,
    /// The version to make current (see `goldfish versions NAME`).
    #[arg(long)]
    pub to: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// The function's name.
    pub name: String,
    /// The path (and query) the function sees, e.g. `/items?x=1`.
    #[arg(default_value = "/")]
    pub path: String,
    /// The method (default: GET, or POST with `-d`).
    #[arg(short = 'X', long = "request")]
    pub method: Option<String>,
    /// The request body; `@FILE` reads it from FILE.
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// A request header, `'Name: value'`; repeat for more.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Print the status line and the response headers before the body.
    #[arg(short = 'i', long = "include")]
    pub include: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Runs one client command. `Ok(false)` means it ran but failed in a way it already printed
/// (an invocation answered 4xx or 5xx).
pub async fn run(command: ClientCommand) -> anyhow::Result<bool> {
    match command {
        ClientCommand::Deploy(args) => deploy(args).await.map(|()| true),
        ClientCommand::Ls(args) => {
            let client = Client::new(&args.target)?;
            let entries: Vec<FunctionEntry> = client.get_json("/v1/functions").await?;
            print(&args.target, &entries, || output::functions_table(&entries))
        }
        ClientCommand::Show(args) => {
            let client = Client::new(&args.target)?;
            let entry: FunctionEntry = client.get_json(&function_path(&args.name)).await?;
            print(&args.target, &entry, || output::function_details(&entry))
        }
        ClientCommand::Invoke(args) => invoke(args).await,
        ClientCommand::Rm(args) => {
            let client = Client::new(&args.target)?;
            client.delete(&function_path(&args.name)).await?;
            let gone = serde_json::json!({ "deleted": args.name });
            print(&args.target, &gone, || {
                format!("deleted {} and its versions\n", args.name)
            })
        }
        ClientCommand::Versions(args) => {
            let client = Client::new(&args.target)?;
            let path = format!("{}/versions", function_path(&args.name));
            let list: VersionList = client.get_json(&path).await?;
            print(&args.target, &list, || output::versions_table(&list))
        }
        ClientCommand::Errors(args) => {
            let client = Client::new(&args.target)?;
            let path = format!("{}/errors", function_path(&args.name));
            let list: FailureList = client.get_json(&path).await?;
            print(&args.target, &list, || output::failures_table(&list))
        }
        ClientCommand::Rollback(args) => {
            let client = Client::new(&args.target)?;
            let mut path = format!("{}/rollback", function_path(&args.name));
            if let Some(to) = args.to {
                path.push_str(&format!("?to={to}"));
            }
            let entry: FunctionEntry = client.post_json(&path).await?;
            print(&args.target, &entry, || {
                format!(
                    "{} is now at version {} ({})\n",
                    entry.name,
                    entry.version,
                    output::short_digest(&entry.digest)
                )
            })
        }
    }
}

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.target)?;
    let mut path = function_path(&args.name);
    let mut query = Vec::new();
    if let Some(app) = &args.app {
        query.push(format!("app={app}"));
    }
    if let Some(mib) = args.memory_mib {
        query.push(format!("memory_mib={mib}"));
    }
    if let Some(ms) = args.cpu_ms {
        query.push(format!("cpu_ms={ms}"));
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let upload = Upload::open(&args.file, !args.target.json)
        .await
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let entry: FunctionEntry = client.deploy(&path, upload).await?;
    print(&args.target, &entry, || output::deployed(&entry))?;
    Ok(())
}

async fn invoke(args: InvokeArgs) -> anyhow::Result<bool> {
    let client = Client::new(&args.target)?;
    let body = match args.data.as_deref() {
        Some(file) if file.starts_with('@') => {
            let file = &file[1..];
            Some(std::fs::read(file).with_context(|| format!("cannot read {file} (-d @FILE)"))?)
        }
        Some(text) => Some(text.as_bytes().to_vec()),
        None => None,
    };
    let method = match &args.method {
        Some(method) => method.to_ascii_uppercase(),
        None if body.is_some() => "POST".to_owned(),
        None => "GET".to_owned(),
    };
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("header `{header}` is not `Name: value`"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let url_path = format!("/fn/{}{}", args.name, path);
    let answer = client.invoke(&method, &url_path, &headers, body).await?;
    let ok = answer.status < 400;
    if args.target.json {
        output::write_stdout(output::to_json(&answer.to_json())?.as_bytes())?;
    } else if args.include || ok {
        output::write_stdout(&output::invocation(&answer, args.include))?;
    }
    if !ok {
        eprintln!("error: {}", answer.failure());
    }
    Ok(ok)
}

/// `/v1/functions/{name}`.
fn function_path(name: &str) -> String {
    format!("/v1/functions/{name}")
}

/// Prints `value` as JSON with `--json`, else the text `human` renders.
fn print<T: serde::Serialize>(
    target: &Target,
    value: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<bool> {
    let text = if target.json {
        output::to_json(value)?
    } else {
        human()
    };
    output::write_stdout(text.as_bytes())?;
    Ok(true)
}
