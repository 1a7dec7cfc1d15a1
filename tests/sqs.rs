//! Hopper's SQS endpoint held against the real SDK: `tests/sqs/test_sqs.py` runs
//! boto3 and the AWS CLI (from PyPI, pinned in `tests/sqs/requirements.txt`)
//! through every action, standard and FIFO queues, dead-letter queues, long-polls,
//! grants and signatures, and the query protocol; `tests/sqs/survive.py` sends,
//! then receives after `hopper serve` was killed with SIGKILL and started again.
//! Each runs on every store against a `hopper serve` process of its own.
//!
//! The Python packages are in the virtualenv `HOPPER_TEST_VENV` names (`.ci/run`
//! makes it); without it these tests are reported ignored, never passed.

#[allow(unused_macros, unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::serve::ServeProcess;
use common::{Backend, BackendKind, Runtime, ADMIN_SECRET};
use libtest_mimic::Trial;
use serde_json::{json, Value};

const VENV_ENV: &str = "HOPPER_TEST_VENV";
/// The stores the SDK's runs go through.
const BACKENDS: &[BackendKind] = &[
    BackendKind::Sqlite,
    BackendKind::Postgres,
    BackendKind::Redis,
];
/// A fixed master key for stores other than SQLite, which need one configured
/// before they issue access keys (base64 of 32 bytes).
const SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn main() {
    let mut trials = Vec::new();
    let configured = std::env::var_os(VENV_ENV).is_some();
    let suites: [(&str, SuiteFn); 2] = [
        ("boto3_and_the_aws_cli_run_every_action", |b| {
            Box::pin(sdk_suite(b))
        }),
        ("messages_sent_before_a_kill_are_received_after_it", |b| {
            Box::pin(survives_a_kill(b))
        }),
    ];
    for (name, test) in suites {
        match configured {
            true => trials.extend(common::on_backends(
                BACKENDS,
                name,
                Runtime::MultiThread(2),
                test,
            )),
            false => trials.extend(BACKENDS.iter().map(|kind| {
                Trial::test(format!("{}::{name}", kind.label()), || {
                    Err(format!("{VENV_ENV} is not set: it names a virtualenv with tests/sqs/requirements.txt installed (.ci/run makes one)").into())
                })
                .with_ignored_flag(true)
            })),
        }
    }
    common::run_trials(trials)
}

/// One of the suites, run on a backend.
type Suite = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// A suite as `main` lists it.
type SuiteFn = fn(Backend) -> Suite;

/// The virtualenv with the SDK.
fn venv() -> PathBuf {
    PathBuf::from(std::env::var_os(VENV_ENV).expect("checked in main"))
}

fn config() -> String {
    format!("[auth]\nsecret_key = \"{SECRET_KEY}\"\n")
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sqs")
}

/// Runs `python script args` from the virtualenv with the server's address set;
/// fails with its output unless it succeeds.
fn python(server: &ServeProcess, env: &[(&str, &str)], args: &[&str]) -> String {
    let output = Command::new(venv().join("bin/python"))
        .args(args)
        .current_dir(tests_dir())
        .env("HOPPER_URL", server.base_url())
        .env("HOPPER_ADMIN_SECRET", ADMIN_SECRET)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run the virtualenv's python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{args:?} failed:\n{stdout}\n{}\n--- hopper's log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    stdout
}

async fn sdk_suite(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.isolated_store();
    let server = ServeProcess::start(&store.url, dir.path(), &config());
    python(
        &server,
        &[],
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_sqs.py",
        ],
    );
}

/// An access key of a new client that may do anything with queues.
async fn access_key(server: &ServeProcess) -> (String, String) {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.base_url());
    let created = client
        .post(url("/api/v1/admin/clients"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!({"id": "survivor", "grants": ["queue:*:*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let keys: Value = client
        .post(url("/api/v1/admin/clients/survivor/aws-keys"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        keys["access_key_id"].as_str().unwrap().to_owned(),
        keys["secret_access_key"].as_str().unwrap().to_owned(),
    )
}

async fn survives_a_kill(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.isolated_store();
    let mut server = ServeProcess::start(&store.url, dir.path(), &config());
    let (key_id, key_secret) = access_key(&server).await;
    let env = [
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", key_secret.as_str()),
    ];
    let sent = python(&server, &env, &["survive.py", "send"]);
    assert!(sent.contains("sent"), "{sent}");
    server.kill_hard();
    server.restart();
    let received = python(&server, &env, &["survive.py", "receive"]);
    assert!(received.contains("received"), "{received}");
}
