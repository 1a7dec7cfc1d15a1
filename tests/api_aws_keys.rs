//! AWS access keys: issued to a client by an admin (`POST /api/v1/admin/clients/{id}/aws-keys`,
//! the secret shown once), listed without secrets, deleted; and requests signed with
//! them (AWS Signature Version 4, by the AWS SDK's own signer) verified by the
//! server's `Authenticator::authenticate_sigv4` against the real store: accepted as
//! the key's client with its grants, refused for a wrong secret, an unknown key, a
//! tampered body, an unsigned `x-amz-*` header, a stale clock or a session token,
//! and at once once the key or its client is deleted. Secrets are sealed under
//! `auth.secret_key`; on SQLite without one, under a key file that a restart reuses;
//! on PostgreSQL and Redis without one, issuing is 503 naming the setting.

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::sigv4::{AwsRequest, Signer};
use common::{assert_error, assert_error_prefix, trials, Backend, Fixture, TestApp};
use hopper::auth::{Principal, SecretKey, SigV4Error};
use hopper::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;

trials! {
    each_backend {
        issuing_answers_the_pair_once_and_lists_show_ids_only,
        key_routes_are_for_admins_and_known_clients,
        a_signed_request_acts_as_the_keys_client_with_its_grants,
        tampered_unsigned_stale_and_temporary_requests_are_refused,
        a_deleted_key_or_client_is_refused_at_once,
        a_key_deleted_behind_the_servers_back_is_refused_within_a_second,
        repeated_bad_signatures_lock_the_key_out,
    }
    shared_backend {
        without_a_secret_key_issuing_is_503_naming_the_setting,
    }
    once {
        a_restarted_sqlite_server_opens_its_keys_with_the_key_file,
    }
}

/// A configured secret key of the tests.
fn test_secret_key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// A server whose store can seal secrets: SQLite with its key file (no key
/// configured), PostgreSQL and Redis with `auth.secret_key`.
struct KeyedApp(TestApp);

impl std::ops::Deref for KeyedApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl Fixture for KeyedApp {
    async fn start(backend: Backend) -> Self {
        KeyedApp(keyed_app_with(&backend, |_| {}).await)
    }
}

async fn keyed_app_with(backend: &Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let sqlite = matches!(backend, Backend::Sqlite);
    common::spawn_app_with(backend, |config| {
        if !sqlite {
            config.auth.secret_key = Some(SecretKey::from_base64(&test_secret_key(7)).unwrap());
        }
        configure(config);
    })
    .await
}

fn keys_path(client: &str) -> String {
    format!("/api/v1/admin/clients/{client}/aws-keys")
}

/// Issues a key to `client` as the admin; asserts the 201 and its shape.
async fn issue(app: &TestApp, client: &str) -> (String, String) {
    let response = app
        .as_admin(Method::POST, &keys_path(client))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "issuing for {client}"
    );
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["access_key_id", "secret_access_key"], "{body}");
    (
        body["access_key_id"].as_str().unwrap().to_owned(),
        body["secret_access_key"].as_str().unwrap().to_owned(),
    )
}

async fn list(app: &TestApp, client: &str) -> Vec<Value> {
    let response = app
        .as_admin(Method::GET, &keys_path(client))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["aws_keys"].as_array().unwrap().clone()
}

async fn delete(app: &TestApp, client: &str, key: &str) -> reqwest::Response {
    app.as_admin(Method::DELETE, &format!("{}/{key}", keys_path(client)))
        .send()
        .await
        .unwrap()
}

/// Verifies `request` with the server's authenticator, as from `source`.
async fn verify_from(
    app: &TestApp,
    request: &AwsRequest,
    source: Option<IpAddr>,
) -> Result<Principal, SigV4Error> {
    let headers = request.header_refs();
    app.auth()
        .authenticate_sigv4(&request.as_signed(&headers), source)
        .await
}

async fn verify(app: &TestApp, request: &AwsRequest) -> Result<Principal, SigV4Error> {
    verify_from(app, request, None).await
}

fn send_message() -> AwsRequest {
    AwsRequest::query_protocol("Action=SendMessage&MessageBody=hello&Version=2012-11-05")
}

fn grants_of(principal: &Principal) -> Vec<String> {
    principal.grants.iter().map(ToString::to_string).collect()
}

async fn issuing_answers_the_pair_once_and_lists_show_ids_only(app: KeyedApp) {
    app.create_client("worker", &["queue:orders:produce"]).await;
    let (first, secret) = issue(&app, "worker").await;
    assert_eq!(first.len(), 20, "{first}");
    assert!(first.starts_with("HOPR"), "{first}");
    assert!(first
        .bytes()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    assert_eq!(secret.len(), 40, "{secret}");
    let (second, second_secret) = issue(&app, "worker").await;
    assert_ne!(first, second);
    assert_ne!(secret, second_secret);

    let listed = list(&app, "worker").await;
    let ids: Vec<&str> = listed
        .iter()
        .map(|key| key["access_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&first.as_str()) && ids.contains(&second.as_str()));
    for key in &listed {
        let fields: Vec<&String> = key.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["access_key_id", "created_at"], "{key}");
        assert!(key["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(&secret) && !text.contains(&second_secret));

    let response = delete(&app, "worker", &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"access_key_id": first, "deleted": true})
    );
    let left = list(&app, "worker").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["access_key_id"], second.as_str());
    assert_error(
        delete(&app, "worker", &first).await,
        StatusCode::NOT_FOUND,
        &format!("Not Found - AWS access key {first}"),
    )
    .await;
    assert_error_prefix(
        delete(&app, "worker", "not-a-key").await,
        StatusCode::BAD_REQUEST,
        "Bad Request",
    )
    .await;
    // The key is the client's to delete: another client's path does not reach it.
    app.create_client("other", &[]).await;
    assert_error(
        delete(&app, "other", &second).await,
        StatusCode::NOT_FOUND,
        &format!("Not Found - AWS access key {second}"),
    )
    .await;
    assert_eq!(list(&app, "worker").await.len(), 1);
}

async fn key_routes_are_for_admins_and_known_clients(app: KeyedApp) {
    for (method, path) in [
        (Method::POST, keys_path("nobody")),
        (Method::GET, keys_path("nobody")),
    ] {
        let response = app.as_admin(method, &path).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "Not Found - client nobody").await;
    }
    let response = delete(&app, "nobody", "HOPRAAAAAAAAAAAAAAAA").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let secret = app
        .create_client("shop", &["queue:*:*", "stream:*:*"])
        .await;
    let (key, _) = issue(&app, "shop").await;
    for (method, path) in [
        (Method::POST, keys_path("shop")),
        (Method::GET, keys_path("shop")),
        (Method::DELETE, format!("{}/{key}", keys_path("shop"))),
    ] {
        let response = app
            .as_client("shop", &secret, method.clone(), &path)
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            StatusCode::FORBIDDEN,
            "Forbidden - needs grant admin",
        )
        .await;
        let response = app.request(method, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        list(&app, "shop").await.len(),
        1,
        "refusals changed nothing"
    );
}

async fn a_signed_request_acts_as_the_keys_client_with_its_grants(app: KeyedApp) {
    app.create_client("worker", &["queue:orders:produce", "queue:jobs:consume"])
        .await;
    let (key, secret) = issue(&app, "worker").await;
    let principal = verify(&app, &send_message().signed(&Signer::new(&key, &secret)))
        .await
        .expect("a request signed with the key is accepted");
    assert_eq!(principal.id.as_str(), "worker");
    assert_eq!(
        grants_of(&principal),
        ["queue:orders:produce", "queue:jobs:consume"]
    );
    // Again, from the cache; and the JSON protocol, whose X-Amz-Target is signed.
    assert!(
        verify(&app, &send_message().signed(&Signer::new(&key, &secret)))
            .await
            .is_ok()
    );
    let json = AwsRequest::json_protocol(
        "AmazonSQS.SendMessage",
        r#"{"QueueUrl":"http://sqs.eu-west-1.hopper.test/000000000000/orders","MessageBody":"hi"}"#,
    );
    assert!(verify(&app, &json.signed(&Signer::new(&key, &secret)))
        .await
        .is_ok());
    // Any region, any path and query, and a body hash the client sent itself.
    let signer = Signer {
        region: "mars-north-9",
        content_sha256: true,
        ..Signer::new(&key, &secret)
    };
    let mut request = send_message();
    request.path = "/000000000000/orders".into();
    request.query = "Action=GetQueueAttributes&AttributeName.1=All".into();
    let principal = verify(&app, &request.signed(&signer)).await.unwrap();
    assert_eq!(principal.id.as_str(), "worker");
    // The principal follows the client's grants.
    let response = app
        .as_admin(Method::PUT, "/api/v1/admin/clients/worker/grants")
        .json(&serde_json::json!({"grants": ["stream:events:produce"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let principal = verify(&app, &send_message().signed(&Signer::new(&key, &secret)))
        .await
        .unwrap();
    assert_eq!(grants_of(&principal), ["stream:events:produce"]);
}

async fn tampered_unsigned_stale_and_temporary_requests_are_refused(app: KeyedApp) {
    app.create_client("worker", &["queue:orders:produce"]).await;
    let (key, secret) = issue(&app, "worker").await;
    let signer = Signer::new(&key, &secret);
    assert!(verify(&app, &send_message().signed(&signer)).await.is_ok());

    let wrong_secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let refused = verify(
        &app,
        &send_message().signed(&Signer::new(&key, wrong_secret)),
    )
    .await;
    assert!(
        matches!(refused, Err(SigV4Error::SignatureMismatch)),
        "{refused:?}"
    );

    let unknown = verify(
        &app,
        &send_message().signed(&Signer::new("HOPRAAAAAAAAAAAAAAAA", &secret)),
    )
    .await;
    assert!(
        matches!(unknown, Err(SigV4Error::UnknownKey)),
        "{unknown:?}"
    );
    let not_ours = verify(&app, &send_message().signed(&Signer::new("AKID", &secret))).await;
    assert!(
        matches!(not_ours, Err(SigV4Error::UnknownKey)),
        "{not_ours:?}"
    );

    let mut tampered = send_message().signed(&signer);
    tampered.body = b"Action=SendMessage&MessageBody=evil&Version=2012-11-05".to_vec();
    let refused = verify(&app, &tampered).await;
    assert!(
        matches!(refused, Err(SigV4Error::SignatureMismatch)),
        "{refused:?}"
    );
    // With the body's hash sent along, the hash no longer matches the body.
    let mut tampered = send_message().signed(&Signer {
        content_sha256: true,
        ..signer.clone()
    });
    tampered.body = b"Action=DeleteQueue".to_vec();
    let refused = verify(&app, &tampered).await;
    assert!(
        matches!(&refused, Err(SigV4Error::Malformed(m)) if m.contains("x-amz-content-sha256")),
        "{refused:?}"
    );

    let unsigned = send_message()
        .signed(&signer)
        .with_header("x-amz-target", "AmazonSQS.DeleteQueue");
    let refused = verify(&app, &unsigned).await;
    assert!(
        matches!(&refused, Err(SigV4Error::Malformed(m)) if m.contains("x-amz-target")),
        "{refused:?}"
    );
    let changed_header = send_message()
        .signed(&signer)
        .with_header("content-type", "text/plain");
    assert!(matches!(
        verify(&app, &changed_header).await,
        Err(SigV4Error::SignatureMismatch)
    ));

    let now = SystemTime::now();
    let recent = Signer {
        time: now - Duration::from_secs(10 * 60),
        ..signer.clone()
    };
    assert!(verify(&app, &send_message().signed(&recent)).await.is_ok());
    for time in [
        now - Duration::from_secs(20 * 60),
        now + Duration::from_secs(20 * 60),
    ] {
        let stale = Signer {
            time,
            ..signer.clone()
        };
        let refused = verify(&app, &send_message().signed(&stale)).await;
        assert!(
            matches!(&refused, Err(SigV4Error::RequestExpired { .. })),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().to_string().contains("15 minutes"));
    }

    let temporary = Signer {
        session_token: Some("FwoGZXIvYXdzEXAMPLETOKEN"),
        ..signer.clone()
    };
    let refused = verify(&app, &send_message().signed(&temporary)).await;
    assert!(
        matches!(refused, Err(SigV4Error::TemporaryCredentials)),
        "{refused:?}"
    );
    assert!(SigV4Error::TemporaryCredentials
        .to_string()
        .contains("Temporary credentials"));

    let missing = verify(&app, &send_message()).await;
    assert!(
        matches!(missing, Err(SigV4Error::MissingAuthentication)),
        "{missing:?}"
    );
    let other_service = Signer {
        service: "s3",
        ..signer.clone()
    };
    let refused = verify(&app, &send_message().signed(&other_service)).await;
    assert!(
        matches!(refused, Err(SigV4Error::Malformed(_))),
        "{refused:?}"
    );
    let no_date = send_message().signed(&signer).without_header("x-amz-date");
    assert!(matches!(
        verify(&app, &no_date).await,
        Err(SigV4Error::Malformed(_))
    ));
    assert!(
        verify(&app, &send_message().signed(&signer)).await.is_ok(),
        "the refusals left the key working"
    );
}

async fn a_deleted_key_or_client_is_refused_at_once(app: KeyedApp) {
    app.create_client("worker", &["queue:orders:produce"]).await;
    let (key, secret) = issue(&app, "worker").await;
    let (other_key, other_secret) = issue(&app, "worker").await;
    let request = send_message().signed(&Signer::new(&key, &secret));
    assert!(verify(&app, &request).await.is_ok(), "cached now");
    assert_eq!(delete(&app, "worker", &key).await.status(), StatusCode::OK);
    let refused = verify(&app, &request).await;
    assert!(
        matches!(refused, Err(SigV4Error::UnknownKey)),
        "{refused:?}"
    );

    let other = send_message().signed(&Signer::new(&other_key, &other_secret));
    assert!(
        verify(&app, &other).await.is_ok(),
        "the client's other key still works"
    );
    let response = app
        .as_admin(Method::DELETE, "/api/v1/admin/clients/worker")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refused = verify(&app, &other).await;
    assert!(
        matches!(refused, Err(SigV4Error::UnknownKey)),
        "{refused:?}"
    );
    // The keys went with the client: a new client of the same id has none.
    app.create_client("worker", &["admin"]).await;
    assert!(list(&app, "worker").await.is_empty());
    let refused = verify(&app, &other).await;
    assert!(
        matches!(refused, Err(SigV4Error::UnknownKey)),
        "{refused:?}"
    );
}

/// Deleted through another handle on the store (as `hopper clients` or another node
/// would), without the server's own `forget`: the cached key is trusted for at most
/// a second more (at once where the store announces it to every node).
async fn a_key_deleted_behind_the_servers_back_is_refused_within_a_second(app: KeyedApp) {
    app.create_client("worker", &[]).await;
    let (key, secret) = issue(&app, "worker").await;
    let request = send_message().signed(&Signer::new(&key, &secret));
    assert!(verify(&app, &request).await.is_ok(), "cached now");
    let store = hopper::store::open(app.store_url()).await.unwrap();
    store
        .delete_aws_key(
            &hopper::domain::ClientId::parse("worker").unwrap(),
            &hopper::domain::AccessKeyId::parse(&key).unwrap(),
        )
        .await
        .unwrap();
    store.close().await;
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    loop {
        match verify(&app, &request).await {
            Err(SigV4Error::UnknownKey) => break,
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "still accepted after 1.5 s"
            ),
            Err(other) => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn repeated_bad_signatures_lock_the_key_out(backend: Backend) {
    let app = keyed_app_with(&backend, |config| {
        config.auth.max_failures = 3;
        config.auth.failure_window = Duration::from_secs(2);
    })
    .await;
    app.create_client("worker", &[]).await;
    let (key, secret) = issue(&app, "worker").await;
    let good = send_message().signed(&Signer::new(&key, &secret));
    let bad = send_message().signed(&Signer::new(&key, "not the secret"));
    let address = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
    for n in 1..=3 {
        let refused = verify_from(&app, &bad, address(n)).await;
        assert!(
            matches!(refused, Err(SigV4Error::SignatureMismatch)),
            "{refused:?}"
        );
    }
    let locked = verify_from(&app, &good, address(4)).await;
    let Err(SigV4Error::TooManyFailures(wait)) = locked else {
        panic!("the key is locked out, right signature or not: {locked:?}");
    };
    assert!(wait <= Duration::from_secs(2), "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert!(verify_from(&app, &good, address(4)).await.is_ok());
}

async fn without_a_secret_key_issuing_is_503_naming_the_setting(app: TestApp) {
    app.create_client("worker", &[]).await;
    let response = app
        .as_admin(Method::POST, &keys_path("worker"))
        .send()
        .await
        .unwrap();
    let headers = assert_error_prefix(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable - AWS access keys need a secret key",
    )
    .await;
    assert!(
        !headers.contains_key("retry-after"),
        "retrying does not help until it is set"
    );
    let response = app
        .as_admin(Method::POST, &keys_path("worker"))
        .send()
        .await
        .unwrap();
    let text: Value = response.json().await.unwrap();
    let text = text.as_str().unwrap();
    assert!(
        text.contains("HOPPER_SECRET_KEY") && text.contains("auth.secret_key"),
        "{text}"
    );
    assert!(list(&app, "worker").await.is_empty());
}

/// Starts `hopper::server::start` on the SQLite store at `url`, bootstrapping the
/// admin with `admin_secret` on the first start.
async fn serve(url: &str, secret_key: Option<&str>) -> hopper::server::Server {
    hopper::server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: url.to_owned(),
        admin_secret: Some(common::ADMIN_SECRET.to_owned()),
        auth: hopper::config::AuthSettings {
            secret_key: secret_key.map(|key| SecretKey::from_base64(key).unwrap()),
            ..Default::default()
        },
        ..Config::default()
    })
    .await
    .expect("the server starts")
}

async fn a_restarted_sqlite_server_opens_its_keys_with_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("hopper.db");
    let url = format!("sqlite://{}", database.display());
    let key_file = dir.path().join("hopper.db.secret-key");

    let server = serve(&url, None).await;
    assert!(
        key_file.is_file(),
        "the key file is made at the first start"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}{}", server.addr, keys_path("admin")))
        .basic_auth("admin", Some(common::ADMIN_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let key = body["access_key_id"].as_str().unwrap().to_owned();
    let secret = body["secret_access_key"].as_str().unwrap().to_owned();
    let request = send_message().signed(&Signer::new(&key, &secret));
    let headers = request.header_refs();
    let signed = request.as_signed(&headers);
    assert!(server.auth.authenticate_sigv4(&signed, None).await.is_ok());
    let file_text = std::fs::read_to_string(&key_file).unwrap();
    server.shutdown();
    server.wait().await.unwrap();
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "no file of the store holds the secret in clear"
        );
    }

    let server = serve(&url, None).await;
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        file_text,
        "the restart reused the key file"
    );
    let principal = server
        .auth
        .authenticate_sigv4(&signed, None)
        .await
        .expect("the key works after the restart");
    assert_eq!(principal.id.as_str(), "admin");
    server.shutdown();
    server.wait().await.unwrap();

    // A configured key beats the file: the keys sealed under the file's do not open.
    let server = serve(&url, Some(&test_secret_key(9))).await;
    let refused = server.auth.authenticate_sigv4(&signed, None).await;
    assert!(
        matches!(refused, Err(SigV4Error::CannotOpenSecret)),
        "{refused:?}"
    );
    server.shutdown();
    server.wait().await.unwrap();
}
