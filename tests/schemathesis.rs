//! The API description held against the real server by outside tools: the
//! document validates with `openapi-spec-validator`; schemathesis, with every
//! check on, finds no request the server answers against its own description; and
//! in Chromium, the `/docs` page authorizes, pushes and pops as a newcomer would,
//! and the `/ui` dashboard logs in, counts and redrives dead letters.
//!
//! The Python tools come from PyPI (pinned in `tests/schemathesis/requirements.txt`)
//! in a virtualenv named by `HOPPER_TEST_VENV`; the browser is driven by
//! playwright-core (pinned in `tests/browser/package-lock.json`), installed in
//! a directory named by `HOPPER_TEST_BROWSER` where `npm ci` ran over
//! `tests/browser/package*.json` (`.ci/run` makes `target/browser`).
//! `.ci/run` sets up both. Without them these tests are reported ignored, never
//! passed; run anyway, they fail saying why.

// Only the harness and fixtures of `common` are used here, not its `trials!`.
#[allow(unused_macros, unused_imports)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};

/// The variable naming the virtualenv with schemathesis and openapi-spec-validator.
const VENV_ENV: &str = "HOPPER_TEST_VENV";
const ADMIN_SECRET: &str = "schemathesis-admin-secret-0123";
/// Examples per operation and phase: enough to reach past the obvious, and the whole
/// run stays within a few minutes on a debug build.
const MAX_EXAMPLES: &str = "100";

/// The variable naming the directory whose `node_modules` holds playwright-core.
const BROWSER_ENV: &str = "HOPPER_TEST_BROWSER";

type Test = fn(&Path) -> Result<(), Failed>;

fn main() {
    let needs_venv = format!("{VENV_ENV} is not set: it names a virtualenv with tests/schemathesis/requirements.txt installed (.ci/run makes one)");
    let needs_browser = format!("{BROWSER_ENV} is not set: it names a directory where `npm ci` ran over tests/browser/package*.json, with Debian's chromium installed (.ci/run makes target/browser)");
    let trials = [
        (
            "the_description_validates_with_openapi_spec_validator",
            validates as Test,
            VENV_ENV,
            &needs_venv,
        ),
        (
            "schemathesis_with_every_check_finds_nothing",
            schemathesis,
            VENV_ENV,
            &needs_venv,
        ),
        (
            "the_docs_page_authorizes_pushes_and_pops_in_chromium",
            docs_page,
            BROWSER_ENV,
            &needs_browser,
        ),
        (
            "the_dashboard_logs_in_counts_and_redrives_in_chromium",
            dashboard,
            BROWSER_ENV,
            &needs_browser,
        ),
    ]
    .into_iter()
    .map(
        |(name, test, variable, needs)| match std::env::var(variable) {
            Ok(dir) if !dir.trim().is_empty() => {
                let dir = PathBuf::from(dir.trim());
                Trial::test(name, move || test(&dir))
            }
            _ => {
                let needs = needs.clone();
                Trial::test(name, move || Err(needs.into())).with_ignored_flag(true)
            }
        },
    )
    .collect();
    common::run_trials(trials)
}

/// `hopper serve` on a fresh SQLite store and a free port, with the schemathesis
/// configuration (short long-polls); killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Result<Server, Failed> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log =
            std::fs::File::create(dir.path().join("hopper.log")).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_hopper"))
            .args(["serve", "--config", "tests/schemathesis/hopper.toml"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(format!("sqlite://{}/hopper.db", dir.path().display()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HOPPER_ADMIN_SECRET", ADMIN_SECRET)
            .env("RUST_LOG", "warn")
            .env_remove("HOPPER_LISTEN")
            .env_remove("HOPPER_STORE")
            .env_remove("HOPPER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run hopper: {e}"))?;
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(port, "/health").map_or(true, |answer| !answer.starts_with("HTTP/1.1 200")) {
            if Instant::now() > deadline {
                return Err(format!(
                    "hopper did not answer /health within 30 s: {}",
                    server.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("hopper.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET, answered whole (the server closes the connection).
fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn tool(venv: &Path, name: &str) -> Result<PathBuf, Failed> {
    let path = venv.join("bin").join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: install tests/schemathesis/requirements.txt into {}",
            path.display(),
            venv.display()
        )
        .into())
    }
}

fn report(what: &str, output: &Output) -> Result<(), Failed> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        // The summary, for the CI log: what ran, how many cases, which seed.
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        eprintln!(
            "{what}:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        Ok(())
    } else {
        Err(format!("{what} failed ({}):\n{text}", output.status).into())
    }
}

fn validates(venv: &Path) -> Result<(), Failed> {
    let server = Server::start()?;
    let python = tool(venv, "python")?;
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, urllib.request\n\
             from openapi_spec_validator import validate\n\
             document = json.load(urllib.request.urlopen(sys.argv[1]))\n\
             validate(document)\n\
             print('valid:', document['openapi'], len(document['paths']), 'paths')",
        ])
        .arg(server.url("/openapi.json"))
        .output()
        .map_err(|e| e.to_string())?;
    report("openapi-spec-validator", &output)
}

fn schemathesis(venv: &Path) -> Result<(), Failed> {
    let server = Server::start()?;
    let st = tool(venv, "st")?;
    let output = Command::new(st)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis"))
        .args(["--no-color", "run"])
        .arg(server.url("/openapi.json"))
        .args(["--auth", &format!("admin:{ADMIN_SECRET}")])
        .args(["--max-examples", MAX_EXAMPLES, "--workers", "2"])
        .output()
        .map_err(|e| e.to_string())?;
    let reported = report("schemathesis", &output);
    if reported.is_err() {
        eprintln!("hopper's log:\n{}", server.log());
    }
    reported
}

/// `tests/browser/NAME` copied into `browser`, where `npm ci` put playwright-core:
/// Node resolves a script's imports from the script's own directory, and the
/// packages live outside the source tree.
fn browser_script(browser: &Path, name: &str) -> Result<PathBuf, Failed> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name);
    let script = browser.join(name);
    std::fs::copy(&source, &script).map_err(|e| {
        format!(
            "cannot copy {} into {}: {e}",
            source.display(),
            browser.display()
        )
    })?;
    Ok(script)
}

/// Runs `tests/browser/docs.mjs` (beside the `node_modules` in `browser`) against a
/// real server: the page's Authorize, then push and pop with Try it out.
fn docs_page(browser: &Path) -> Result<(), Failed> {
    let server = Server::start()?;
    let script = browser_script(browser, "docs.mjs")?;
    // Kept past the run, for a look at what the page showed when a step failed.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs-page-failure.png");
    let output = Command::new("node")
        .current_dir(browser)
        .arg(&script)
        .arg(server.url(""))
        .args(["admin", ADMIN_SECRET])
        .env("HOPPER_TEST_SCREENSHOT", &screenshot)
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let reported = report("the /docs page in Chromium", &output);
    if reported.is_err() {
        eprintln!("hopper's log:\n{}", server.log());
    }
    reported
}

/// Runs `tests/browser/ui.mjs` against a real server: the dashboard's login, a
/// queue's counts, a dead letter redriven, a task looked up. Its screenshots are
/// kept in `ui-screenshots` under Cargo's test directory, failed or not.
fn dashboard(browser: &Path) -> Result<(), Failed> {
    let server = Server::start()?;
    let script = browser_script(browser, "ui.mjs")?;
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let output = Command::new("node")
        .current_dir(browser)
        .arg(&script)
        .arg(server.url(""))
        .args(["admin", ADMIN_SECRET])
        .arg(&screenshots)
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let reported = report("the /ui dashboard in Chromium", &output);
    if reported.is_err() {
        eprintln!("hopper's log:\n{}", server.log());
    }
    reported
}
