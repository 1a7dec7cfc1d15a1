//! `hopper clients`, run as the binary: `add`, `grant`, `revoke`, `rotate` change the
//! store, under the same rules as the admin API (the last admin keeps `admin`); a
//! server on the same store applies the change within a second; the store comes from
//! `--store`, else `HOPPER_STORE`, else `--config`'s file; a store that does not exist
//! is refused, naming it, and left uncreated. `aws-keys` issues an AWS access key
//! that a server on the store accepts, sealed as `serve` seals it.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{trials, Backend, PgSchema, TestApp};
use hopper::domain::ClientId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

trials! {
    each_backend {
        grant_revoke_and_rotate_change_the_client_in_the_store,
        the_last_admin_keeps_its_grant_and_unknown_clients_are_refused,
        a_running_server_applies_cli_changes_within_a_second,
        aws_keys_issues_a_key_a_server_on_the_store_accepts,
    }
    postgres {
        a_postgres_store_without_hoppers_schema_is_refused,
    }
    redis_backend {
        a_redis_prefix_hopper_never_opened_is_refused,
    }
    once {
        a_missing_sqlite_store_is_refused_naming_its_path,
        the_store_is_the_flag_else_the_environment_else_the_config_file,
    }
}

/// Runs `hopper clients ARGS` with none of the variables that would choose its store
/// but those in `env`.
async fn hopper_clients(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hopper"));
    command
        .arg("clients")
        .args(args)
        .env_remove("HOPPER_STORE")
        .env_remove("HOPPER_CONFIG")
        .env_remove("HOPPER_SECRET_KEY")
        .env_remove("RUST_BACKTRACE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("the hopper binary runs")
}

/// Standard output of a run that must succeed.
async fn succeeds(args: &[&str]) -> String {
    let output = hopper_clients(args, &[]).await;
    assert!(
        output.status.success(),
        "hopper clients {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Standard error of a run that must fail.
async fn fails(args: &[&str]) -> String {
    let output = hopper_clients(args, &[]).await;
    assert!(
        !output.status.success(),
        "hopper clients {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// A fresh store of `backend`, created as `serve` creates it; kept while in scope.
async fn created_store(backend: &Backend) -> common::IsolatedStore {
    let isolated = backend.isolated_store();
    hopper::store::open(&isolated.url)
        .await
        .expect("cannot create the store")
        .close()
        .await;
    isolated
}

/// Whether `secret` is the one stored for `id`.
async fn holds_secret(store_url: &str, id: &str, secret: &str) -> bool {
    let store = hopper::store::open(store_url).await.unwrap();
    let record = store
        .client(&ClientId::parse(id).unwrap())
        .await
        .unwrap()
        .expect("the client exists");
    store.close().await;
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || hopper::auth::verify_secret(&secret, &record.secret_hash))
        .await
        .unwrap()
}

async fn grant_revoke_and_rotate_change_the_client_in_the_store(backend: Backend) {
    let store = created_store(&backend).await;
    let at = ["--store", store.url.as_str()];
    let added: Value = serde_json::from_str(
        &succeeds(&[&["add", "shop", "--grant", "queue:a:produce"][..], &at].concat()).await,
    )
    .unwrap();
    let first = added["secret"].as_str().unwrap().to_owned();

    let granted = succeeds(
        &[
            &["grant", "shop", "queue:b:consume", "queue:a:produce"][..],
            &at,
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        granted, "shop\tqueue:a:produce,queue:b:consume\n",
        "a grant held already is kept once"
    );
    let revoked = succeeds(&[&["revoke", "shop", "queue:a:produce"][..], &at].concat()).await;
    assert_eq!(revoked, "shop\tqueue:b:consume\n");
    let error = fails(&[&["revoke", "shop", "queue:c:produce"][..], &at].concat()).await;
    assert!(
        error.contains("client shop does not hold the grant queue:c:produce"),
        "{error}"
    );
    let error = fails(&[&["grant", "shop", "queue:b:eat"][..], &at].concat()).await;
    assert!(
        error.contains("queue:b:eat") || error.contains("eat"),
        "{error}"
    );
    let listed = succeeds(&[&["list"][..], &at].concat()).await;
    assert_eq!(
        listed, "shop\tqueue:b:consume\n",
        "refusals changed nothing"
    );

    let rotated: Value =
        serde_json::from_str(&succeeds(&[&["rotate", "shop"][..], &at].concat()).await).unwrap();
    assert_eq!(rotated["id"], "shop");
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(holds_secret(&store.url, "shop", &second).await);
    assert!(!holds_secret(&store.url, "shop", &first).await);

    let chosen = "a-chosen-secret-of-mine";
    let rotated = succeeds(&[&["rotate", "shop", "--secret", chosen][..], &at].concat()).await;
    assert_eq!(
        serde_json::from_str::<Value>(&rotated).unwrap(),
        json!({"id": "shop", "secret": chosen})
    );
    assert!(holds_secret(&store.url, "shop", chosen).await);
    let error = fails(&[&["rotate", "shop", "--secret", "short"][..], &at].concat()).await;
    assert!(error.contains("at least 12 characters"), "{error}");
    assert!(holds_secret(&store.url, "shop", chosen).await);
}

async fn the_last_admin_keeps_its_grant_and_unknown_clients_are_refused(backend: Backend) {
    let store = created_store(&backend).await;
    let at = ["--store", store.url.as_str()];
    succeeds(&[&["add", "root", "--grant", "admin"][..], &at].concat()).await;
    let error = fails(&[&["revoke", "root", "admin"][..], &at].concat()).await;
    assert!(error.contains("client root is the last admin"), "{error}");
    let error = fails(&[&["remove", "root"][..], &at].concat()).await;
    assert!(error.contains("client root is the last admin"), "{error}");
    succeeds(&[&["add", "deputy"][..], &at].concat()).await;
    succeeds(&[&["grant", "deputy", "admin"][..], &at].concat()).await;
    assert_eq!(
        succeeds(&[&["revoke", "root", "admin"][..], &at].concat()).await,
        "root\t\n",
        "with another admin, root may lose it"
    );
    let error = fails(&[&["revoke", "deputy", "admin"][..], &at].concat()).await;
    assert!(error.contains("client deputy is the last admin"), "{error}");

    for action in [
        &["grant", "nobody", "admin"][..],
        &["revoke", "nobody", "admin"],
        &["rotate", "nobody"],
    ] {
        let error = fails(&[action, &at].concat()).await;
        assert!(error.contains("client nobody"), "{action:?}: {error}");
    }
    assert_eq!(
        succeeds(&[&["list"][..], &at].concat()).await,
        "deputy\tadmin\nroot\t\n"
    );
}

async fn a_running_server_applies_cli_changes_within_a_second(app: TestApp) {
    let secret = app.create_client("shop", &["queue:jobs:produce"]).await;
    let push = |secret: &str| {
        app.as_client("shop", secret, Method::POST, "/api/v1/queues/jobs/messages")
            .json(&json!(1))
            .send()
    };
    assert_eq!(push(&secret).await.unwrap().status(), StatusCode::CREATED);
    let at = ["--store", app.store_url()];
    succeeds(&[&["revoke", "shop", "queue:jobs:produce"][..], &at].concat()).await;
    // On SQLite the server notices when its cached entry is a second old; on
    // PostgreSQL the store's notification reaches it at once.
    let within = |status: StatusCode, secret: String| async move {
        let deadline = Instant::now() + Duration::from_millis(1500);
        loop {
            let got = push(&secret).await.unwrap().status();
            if got == status {
                return;
            }
            assert!(Instant::now() < deadline, "still {got}, not {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    within(StatusCode::FORBIDDEN, secret.clone()).await;
    succeeds(&[&["grant", "shop", "queue:jobs:produce"][..], &at].concat()).await;
    within(StatusCode::CREATED, secret.clone()).await;
    let rotated: Value =
        serde_json::from_str(&succeeds(&[&["rotate", "shop"][..], &at].concat()).await).unwrap();
    within(StatusCode::UNAUTHORIZED, secret.clone()).await;
    let new = rotated["secret"].as_str().unwrap();
    assert_eq!(push(new).await.unwrap().status(), StatusCode::CREATED);
}

async fn aws_keys_issues_a_key_a_server_on_the_store_accepts(backend: Backend) {
    use base64::Engine;
    use common::sigv4::{AwsRequest, Signer};
    let store = created_store(&backend).await;
    let at = ["--store", store.url.as_str()];
    succeeds(&[&["add", "shop", "--grant", "queue:orders:produce"][..], &at].concat()).await;
    let sqlite = matches!(backend, Backend::Sqlite);
    let secret_key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let env: Vec<(&str, &str)> = if sqlite {
        Vec::new()
    } else {
        let refused = hopper_clients(&[&["aws-keys", "shop"][..], &at].concat(), &[]).await;
        assert!(!refused.status.success());
        let error = String::from_utf8_lossy(&refused.stderr);
        assert!(
            error.contains("HOPPER_SECRET_KEY") && error.contains("auth.secret_key"),
            "{error}"
        );
        vec![("HOPPER_SECRET_KEY", secret_key.as_str())]
    };
    let output = hopper_clients(&[&["aws-keys", "shop"][..], &at].concat(), &env).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let issued: Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = issued["access_key_id"].as_str().unwrap();
    let secret = issued["secret_access_key"].as_str().unwrap();
    assert!(key.starts_with("HOPR") && secret.len() == 40, "{issued}");
    if sqlite {
        assert!(store.dir.path().join("hopper.db.secret-key").is_file());
    }
    let output = hopper_clients(&[&["aws-keys", "nobody"][..], &at].concat(), &env).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("client nobody"));

    let server = hopper::server::start(hopper::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.url.clone(),
        auth: hopper::config::AuthSettings {
            secret_key: (!sqlite)
                .then(|| hopper::auth::SecretKey::from_base64(&secret_key).unwrap()),
            ..Default::default()
        },
        ..hopper::config::Config::default()
    })
    .await
    .unwrap();
    let request = AwsRequest::query_protocol("Action=ListQueues").signed(&Signer::new(key, secret));
    let headers = request.header_refs();
    let principal = server
        .auth
        .authenticate_sigv4(&request.as_signed(&headers), None)
        .await
        .expect("the server opens the key the command sealed");
    assert_eq!(principal.id.as_str(), "shop");
    server.shutdown();
    server.wait().await.unwrap();
}

async fn a_missing_sqlite_store_is_refused_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("x.db");
    let url = format!("sqlite://{}", path.display());
    for args in [
        &["list", "--store", &url][..],
        &["add", "shop", "--store", &url],
    ] {
        let error = fails(args).await;
        assert!(
            error.contains(&format!("no SQLite store at {}", path.display())),
            "{error}"
        );
    }
    assert!(!dir.path().join("missing").exists(), "nothing was created");
    // A file that is not a Hopper store is refused too, and left as it was.
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"").unwrap();
    let error = fails(&["list", "--store", &format!("sqlite://{}", other.display())]).await;
    assert!(error.contains("is not a Hopper store"), "{error}");
    assert_eq!(std::fs::metadata(&other).unwrap().len(), 0);
}

async fn a_postgres_store_without_hoppers_schema_is_refused(backend: Backend) {
    let Backend::Postgres { base_url } = backend else {
        unreachable!("a PostgreSQL trial")
    };
    let schema = PgSchema::new(&base_url);
    let url = schema.store_url();
    for _ in 0..2 {
        // A second run fails as the first did: the first created nothing.
        let error = fails(&["list", "--store", &url]).await;
        assert!(
            error.contains("no Hopper store in the PostgreSQL database"),
            "{error}"
        );
        assert!(error.contains(schema.name()), "{error}");
    }
    let unreachable = "postgres://postgres@127.0.0.1:1/test";
    let error = fails(&["list", "--store", unreachable]).await;
    assert!(
        error.contains("cannot connect to the PostgreSQL store (database test)"),
        "{error}"
    );
}

async fn a_redis_prefix_hopper_never_opened_is_refused(backend: Backend) {
    let store = backend.isolated_store();
    for _ in 0..2 {
        // A second run fails as the first did: the first created nothing.
        let error = fails(&["list", "--store", &store.url]).await;
        assert!(error.contains("no Hopper store at"), "{error}");
        assert!(error.contains("hopper:store"), "{error}");
    }
    let unreachable = "redis://127.0.0.1:1/0";
    let error = fails(&["list", "--store", unreachable]).await;
    assert!(error.contains("cannot connect to Redis"), "{error}");
}

fn write_config(dir: &Path, store_url: &str) -> String {
    let path = dir.join("hopper.toml");
    std::fs::write(&path, format!("store = \"{store_url}\"\n")).unwrap();
    path.display().to_string()
}

async fn the_store_is_the_flag_else_the_environment_else_the_config_file() {
    let (file_store, flag_store) = (
        created_store(&Backend::Sqlite).await,
        created_store(&Backend::Sqlite).await,
    );
    let config = write_config(file_store.dir.path(), &file_store.url);
    succeeds(&["add", "from-file", "--config", &config]).await;
    succeeds(&[
        "add",
        "from-flag",
        "--config",
        &config,
        "--store",
        &flag_store.url,
    ])
    .await;
    let from_env = hopper_clients(
        &["add", "from-env", "--config", &config],
        &[("HOPPER_STORE", &flag_store.url)],
    )
    .await;
    assert!(from_env.status.success(), "{from_env:?}");
    let from_env_config =
        hopper_clients(&["add", "from-env-config"], &[("HOPPER_CONFIG", &config)]).await;
    assert!(from_env_config.status.success(), "{from_env_config:?}");

    let ids = |listed: String| -> Vec<String> {
        listed
            .lines()
            .map(|line| line.split('\t').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(succeeds(&["list", "--store", &file_store.url]).await),
        ["from-env-config", "from-file"]
    );
    assert_eq!(
        ids(succeeds(&["list", "--store", &flag_store.url]).await),
        ["from-env", "from-flag"]
    );

    // The file is read as `serve` reads it: a bad one is refused, naming it.
    let broken = file_store.dir.path().join("broken.toml");
    std::fs::write(&broken, "stor = \"sqlite://x.db\"\n").unwrap();
    let error = fails(&["list", "--config", &broken.display().to_string()]).await;
    assert!(error.contains("broken.toml"), "{error}");
}
