//! Logging in for a token and using it: `POST /api/v1/auth/login` (JSON or a form,
//! as the Flask queue's clients sent), `Authorization: Bearer <token>` on later
//! calls with no `API-Client-Id`, `GET /api/v1/auth/whoami`; forged, expired and
//! revoked tokens refused; refusals timed alike whether the id exists or not. And the
//! changes of a client that apply at once to its secret and its tokens: grants
//! replaced (`PUT /api/v1/admin/clients/{id}/grants`), secret rotated
//! (`POST /api/v1/admin/clients/{id}/rotate`).

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{assert_error, assert_error_prefix, trials, Backend, TestApp};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

trials! {
    each_backend {
        login_with_json_gives_a_bearer_token_for_later_calls,
        login_with_a_form_body_works_as_with_json,
        wrong_password_and_unknown_id_are_the_same_401,
        malformed_logins_are_400_or_415,
        forged_and_unsigned_tokens_are_401,
        expired_tokens_are_401,
        a_deleted_clients_token_is_refused_at_once,
        whoami_names_the_caller_and_its_grants_for_every_credential_form,
        tokens_carry_no_grants_and_need_the_grant_like_any_caller,
        too_many_failures_for_an_id_lock_it_out_even_with_the_right_secret,
        too_many_failures_from_an_address_lock_it_out_for_every_id,
        new_grants_apply_at_once_to_cached_secrets_and_earlier_tokens,
        a_rotated_secret_voids_the_old_one_and_its_tokens_at_once,
        a_rotation_may_choose_the_secret_under_the_creation_rules,
        client_changes_refuse_unknown_ids_bad_grants_and_the_last_admin,
        an_api_client_id_beside_basic_is_refused,
    }
    once {
        a_refusal_takes_as_long_for_an_unknown_id_as_for_a_wrong_secret,
        no_secret_hash_or_token_reaches_the_log_even_at_trace_level,
    }
}

const UNAUTHORIZED: &str = "Unauthorized";

/// `POST /api/v1/auth/login` with a JSON body.
async fn login(app: &TestApp, username: &str, password: &str) -> Response {
    app.request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

/// A token for `username`, asserting the login's answer on the way.
async fn token_for(app: &TestApp, username: &str, password: &str) -> String {
    let response = login(app, username, password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    body["token"].as_str().expect("a token").to_owned()
}

/// `method path` with `Authorization: Bearer <token>` and nothing else.
fn with_token(app: &TestApp, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.request(method, path).bearer_auth(token)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token's claims, read without checking it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn login_with_json_gives_a_bearer_token_for_later_calls(app: TestApp) {
    let token = token_for(&app, "admin", &app.admin_secret).await;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "admin");
    for claim in ["iat", "exp", "jti"] {
        assert!(!claims[claim].is_null(), "{claim} in {claims}");
    }
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(!token.contains(&app.admin_secret));

    let pushed = with_token(&app, &token, Method::POST, "/api/v1/queues/jobs/messages")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let popped = with_token(&app, &token, Method::POST, "/api/v1/queues/jobs/pop")
        .send()
        .await
        .unwrap();
    assert_eq!(popped.status(), StatusCode::OK);
    let body: Value = popped.json().await.unwrap();
    assert!(body.to_string().contains("\"n\":1"), "{body}");

    let second = token_for(&app, "admin", &app.admin_secret).await;
    assert_ne!(
        claims_of(&second)["jti"],
        claims["jti"],
        "each token its own id"
    );
}

async fn login_with_a_form_body_works_as_with_json(app: TestApp) {
    let secret = app.create_client("flask", &["queue:jobs:produce"]).await;
    let response = app
        .request(Method::POST, "/api/v1/auth/login")
        .form(&[("username", "flask"), ("password", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let pushed = with_token(&app, token, Method::POST, "/api/v1/queues/jobs/messages")
        .json(&json!("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    // Percent-encoding is decoded: a secret with `&`, `=` and `+` logs in too.
    let tricky = "a&b=c+d e%f-0123456789";
    app.as_admin(Method::POST, "/api/v1/admin/clients")
        .json(&json!({"id": "tricky", "secret": tricky, "grants": []}))
        .send()
        .await
        .unwrap();
    let response = app
        .request(Method::POST, "/api/v1/auth/login")
        .form(&[("username", "tricky"), ("password", tricky)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn wrong_password_and_unknown_id_are_the_same_401(app: TestApp) {
    app.create_client("shop", &[]).await;
    for (username, password) in [
        ("admin", "not-the-admin-secret"),
        ("shop", "not-the-shop-secret"),
        ("nobody", "not-anybodys-secret"),
        ("bad id!", "whatever-it-is-here"),
    ] {
        let response = login(&app, username, password).await;
        assert_error(response, StatusCode::UNAUTHORIZED, UNAUTHORIZED).await;
    }
}

async fn malformed_logins_are_400_or_415(app: TestApp) {
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = app.request(Method::POST, "/api/v1/auth/login");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.body(body).send()
    };
    let json = Some("application/json");
    for body in [
        "{",
        r#"{"username":"admin"}"#,
        r#"{"username":1,"password":"x"}"#,
        r#"["admin","x"]"#,
        r#"{"username":"admin","password":"x","extra":1}"#,
    ] {
        let response = post(body, json).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let form = post("username=admin", Some("application/x-www-form-urlencoded"))
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
    let text = post("admin:x", Some("text/plain")).await.unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let none = post(r#"{"username":"admin","password":"x"}"#, None)
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn forged_and_unsigned_tokens_are_401(app: TestApp) {
    let token = token_for(&app, "admin", &app.admin_secret).await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_of(&token);
    claims["sub"] = json!("admin");
    let payload = b64(claims.to_string().as_bytes());
    let forged = [
        // The signature of another payload.
        format!(
            "{}.{}.{}",
            parts[0],
            b64(json!({"sub": "someone", "iat": 1, "exp": 9_999_999_999i64, "jti": "x", "sfp": "y"})
                .to_string()
                .as_bytes()),
            parts[2]
        ),
        // No signature at all.
        format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
        // Signed with a key that is not the server's.
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"a key the server never had, 32b!"),
        )
        .unwrap(),
        // A changed signature.
        format!("{}.{}.{}x", parts[0], parts[1], parts[2]),
        "not-a-token".to_owned(),
    ];
    for token in forged {
        let response = with_token(&app, &token, Method::GET, "/api/v1/auth/whoami")
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, UNAUTHORIZED).await;
    }
}

async fn expired_tokens_are_401(backend: Backend) {
    let app = common::spawn_app_with(&backend, |config| {
        config.auth.token_ttl = Duration::from_secs(1);
    })
    .await;
    let response = login(&app, "admin", &app.admin_secret).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 1);
    let token = body["token"].as_str().unwrap().to_owned();
    let fresh = with_token(&app, &token, Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    // `exp` is in whole seconds and a second of leeway is allowed: 3 s is past both.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expired = with_token(&app, &token, Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_error(expired, StatusCode::UNAUTHORIZED, UNAUTHORIZED).await;
}

async fn a_deleted_clients_token_is_refused_at_once(app: TestApp) {
    let secret = app.create_client("temp", &["queue:jobs:produce"]).await;
    let token = token_for(&app, "temp", &secret).await;
    let push = || {
        with_token(&app, &token, Method::POST, "/api/v1/queues/jobs/messages")
            .json(&json!(1))
            .send()
    };
    assert_eq!(push().await.unwrap().status(), StatusCode::CREATED);
    let deleted = app
        .as_admin(Method::DELETE, "/api/v1/admin/clients/temp")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_error(
        push().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        UNAUTHORIZED,
    )
    .await;
    // A new client of the same id and another secret does not revive the token.
    app.as_admin(Method::POST, "/api/v1/admin/clients")
        .json(&json!({"id": "temp", "grants": ["queue:jobs:produce"]}))
        .send()
        .await
        .unwrap();
    assert_error(
        push().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        UNAUTHORIZED,
    )
    .await;
    assert_eq!(app.counts("jobs").await.0, 1);
}

async fn whoami_names_the_caller_and_its_grants_for_every_credential_form(app: TestApp) {
    let secret = app
        .create_client("shop", &["queue:orders-*:produce", "stream:orders:*"])
        .await;
    let expected = json!({"id": "shop", "grants": ["queue:orders-*:produce", "stream:orders:*"]});
    let token = token_for(&app, "shop", &secret).await;
    let requests = [
        app.as_client("shop", &secret, Method::GET, "/api/v1/auth/whoami"),
        app.request(Method::GET, "/api/v1/auth/whoami")
            .bearer_auth(&secret)
            .header("API-Client-Id", "shop"),
        with_token(&app, &token, Method::GET, "/api/v1/auth/whoami"),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap(), expected);
    }
    let anonymous = app
        .request(Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, UNAUTHORIZED).await;
}

/// The Flask queue's flow: log in, push with the token; a client that may produce
/// to `orders-*` pushes to `orders-eu` and gets 403 on `billing`.
async fn tokens_carry_no_grants_and_need_the_grant_like_any_caller(app: TestApp) {
    let secret = app.create_client("shop", &["queue:orders-*:produce"]).await;
    let token = token_for(&app, "shop", &secret).await;
    assert!(claims_of(&token).get("grants").is_none());
    let push = |queue: &str| {
        with_token(
            &app,
            &token,
            Method::POST,
            &format!("/api/v1/queues/{queue}/messages"),
        )
        .json(&json!({"order": 1}))
        .send()
    };
    assert_eq!(
        push("orders-eu").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_error(
        push("billing").await.unwrap(),
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:billing:produce",
    )
    .await;
}

/// `PUT /api/v1/admin/clients/{id}/grants` as the admin.
async fn put_grants(app: &TestApp, id: &str, body: Value) -> Response {
    app.as_admin(Method::PUT, &format!("/api/v1/admin/clients/{id}/grants"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `POST /api/v1/admin/clients/{id}/rotate` as the admin, with `body` if any.
async fn rotate(app: &TestApp, id: &str, body: Option<Value>) -> Response {
    let request = app.as_admin(Method::POST, &format!("/api/v1/admin/clients/{id}/rotate"));
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

async fn new_grants_apply_at_once_to_cached_secrets_and_earlier_tokens(app: TestApp) {
    let secret = app.create_client("shop", &["queue:jobs:produce"]).await;
    let token = token_for(&app, "shop", &secret).await;
    let push_with_secret = |queue: &str| {
        app.as_client(
            "shop",
            &secret,
            Method::POST,
            &format!("/api/v1/queues/{queue}/messages"),
        )
        .json(&json!(1))
        .send()
    };
    let push_with_token = |queue: &str| {
        with_token(
            &app,
            &token,
            Method::POST,
            &format!("/api/v1/queues/{queue}/messages"),
        )
        .json(&json!(1))
        .send()
    };
    // Both credentials are verified and cached before the change.
    assert_eq!(
        push_with_secret("jobs").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        push_with_token("jobs").await.unwrap().status(),
        StatusCode::CREATED
    );

    let changed = put_grants(&app, "shop", json!({"grants": ["queue:mail:produce"]})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let view: Value = changed.json().await.unwrap();
    assert_eq!(view["id"], "shop");
    assert_eq!(view["grants"], json!(["queue:mail:produce"]));
    assert!(
        view["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{view}"
    );
    assert_eq!(view.as_object().unwrap().len(), 3, "no secret: {view}");

    for push in [
        push_with_secret("jobs").await,
        push_with_token("jobs").await,
    ] {
        assert_error(
            push.unwrap(),
            StatusCode::FORBIDDEN,
            "Forbidden - needs grant queue:jobs:produce",
        )
        .await;
    }
    assert_eq!(
        push_with_secret("mail").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        push_with_token("mail").await.unwrap().status(),
        StatusCode::CREATED
    );
    let whoami = with_token(&app, &token, Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(
        whoami.json::<Value>().await.unwrap(),
        json!({"id": "shop", "grants": ["queue:mail:produce"]})
    );

    // Giving back is as immediate as taking away.
    let back = put_grants(&app, "shop", json!({"grants": ["queue:jobs:produce"]})).await;
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(
        push_with_token("jobs").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        push_with_secret("jobs").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(app.counts("jobs").await.0, 4);
    assert_eq!(app.counts("mail").await.0, 2);

    let listed: Value = app
        .as_admin(Method::GET, "/api/v1/admin/clients")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shop = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "shop")
        .expect("shop is listed");
    assert_eq!(
        shop["grants"],
        json!(["queue:jobs:produce"]),
        "stored: {listed}"
    );
}

async fn a_rotated_secret_voids_the_old_one_and_its_tokens_at_once(app: TestApp) {
    let old = app.create_client("shop", &["queue:jobs:produce"]).await;
    let old_token = token_for(&app, "shop", &old).await;
    let push = |request: reqwest::RequestBuilder| request.json(&json!(1)).send();
    let with_secret =
        |secret: &str| app.as_client("shop", secret, Method::POST, "/api/v1/queues/jobs/messages");
    let with_bearer =
        |token: &str| with_token(&app, token, Method::POST, "/api/v1/queues/jobs/messages");
    assert_eq!(
        push(with_secret(&old)).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        push(with_bearer(&old_token)).await.unwrap().status(),
        StatusCode::CREATED
    );

    let rotated = rotate(&app, "shop", None).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let body: Value = rotated.json().await.unwrap();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["id"], "shop");
    let new = body["secret"].as_str().expect("the new secret").to_owned();
    assert_ne!(new, old);

    for refused in [
        push(with_secret(&old)).await,
        push(with_bearer(&old_token)).await,
    ] {
        assert_error(refused.unwrap(), StatusCode::UNAUTHORIZED, UNAUTHORIZED).await;
    }
    assert_error(
        login(&app, "shop", &old).await,
        StatusCode::UNAUTHORIZED,
        UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        push(with_secret(&new)).await.unwrap().status(),
        StatusCode::CREATED
    );
    let new_token = token_for(&app, "shop", &new).await;
    assert_eq!(
        push(with_bearer(&new_token)).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_error(
        push(with_bearer(&old_token)).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        UNAUTHORIZED,
    )
    .await;
    assert_eq!(app.counts("jobs").await.0, 4);
}

async fn a_rotation_may_choose_the_secret_under_the_creation_rules(app: TestApp) {
    let old = app.create_client("shop", &["queue:jobs:produce"]).await;
    assert_error(
        rotate(&app, "shop", Some(json!({"secret": "short"}))).await,
        StatusCode::BAD_REQUEST,
        "Bad Request - secret must be at least 12 characters, without control characters",
    )
    .await;
    assert_error_prefix(
        rotate(
            &app,
            "shop",
            Some(json!({"secret": "long-enough-secret", "grants": []})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "Bad Request - ",
    )
    .await;
    // `null` is not a secret: the field is left out for a generated one.
    for secret in [json!(null), json!(12345678901234u64)] {
        assert_error_prefix(
            rotate(&app, "shop", Some(json!({ "secret": secret }))).await,
            StatusCode::BAD_REQUEST,
            "Bad Request - ",
        )
        .await;
        let created = app
            .as_admin(Method::POST, "/api/v1/admin/clients")
            .json(&json!({"id": "nulled", "secret": secret}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::BAD_REQUEST, "{secret}");
    }
    let whoami = |secret: &str| {
        app.as_client("shop", secret, Method::GET, "/api/v1/auth/whoami")
            .send()
    };
    assert_eq!(
        whoami(&old).await.unwrap().status(),
        StatusCode::OK,
        "refused rotations change nothing"
    );

    let chosen = "a-chosen-secret-of-mine";
    let rotated = rotate(&app, "shop", Some(json!({"secret": chosen}))).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(
        rotated.json::<Value>().await.unwrap(),
        json!({"id": "shop", "secret": chosen})
    );
    assert_eq!(whoami(chosen).await.unwrap().status(), StatusCode::OK);
    assert_error(
        whoami(&old).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        UNAUTHORIZED,
    )
    .await;
}

async fn client_changes_refuse_unknown_ids_bad_grants_and_the_last_admin(app: TestApp) {
    assert_error(
        put_grants(&app, "nobody", json!({"grants": []})).await,
        StatusCode::NOT_FOUND,
        "Not Found - client nobody",
    )
    .await;
    assert_error(
        rotate(&app, "nobody", None).await,
        StatusCode::NOT_FOUND,
        "Not Found - client nobody",
    )
    .await;

    let secret = app.create_client("shop", &["queue:jobs:produce"]).await;
    for bad in [
        json!({"grants": ["queue:jobs:eat"]}),
        json!({"grants": ["nonsense"]}),
        json!({"grants": "admin"}),
        json!({}),
        json!({"grants": [], "secret": "long-enough-secret"}),
    ] {
        assert_error_prefix(
            put_grants(&app, "shop", bad.clone()).await,
            StatusCode::BAD_REQUEST,
            "Bad Request - ",
        )
        .await;
    }
    let whoami = app
        .as_client("shop", &secret, Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(
        whoami.json::<Value>().await.unwrap()["grants"],
        json!(["queue:jobs:produce"]),
        "refused changes change nothing"
    );

    // `admin` is the only admin: it may not lose the grant, whatever replaces it.
    for grants in [json!([]), json!(["queue:*:*"])] {
        assert_error(
            put_grants(&app, "admin", json!({"grants": grants})).await,
            StatusCode::CONFLICT,
            "Conflict - client admin is the last admin; create another admin before taking its grant admin",
        )
        .await;
    }
    let kept = put_grants(&app, "admin", json!({"grants": ["admin", "queue:*:*"]})).await;
    assert_eq!(kept.status(), StatusCode::OK, "keeping admin is fine");
    // With a second admin, either may lose it; then the other is the last again.
    app.create_client("deputy", &["admin"]).await;
    let demoted = put_grants(&app, "deputy", json!({"grants": []})).await;
    assert_eq!(demoted.status(), StatusCode::OK);
    assert_error_prefix(
        put_grants(&app, "admin", json!({"grants": []})).await,
        StatusCode::CONFLICT,
        "Conflict - client admin is the last admin",
    )
    .await;
    let deleted = app
        .as_admin(Method::DELETE, "/api/v1/admin/clients/deputy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        deleted.status(),
        StatusCode::OK,
        "deputy is no admin any more"
    );
    let whoami = app
        .as_admin(Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(
        whoami.json::<Value>().await.unwrap()["grants"],
        json!(["admin", "queue:*:*"]),
        "admin kept its grant through the refusals"
    );
}

/// The median time of `tries` logins as `username`.
async fn median_refusal(app: &TestApp, username: &str, tries: usize) -> Duration {
    let mut times = Vec::with_capacity(tries);
    for _ in 0..tries {
        let started = Instant::now();
        let response = login(app, username, "certainly-the-wrong-secret").await;
        times.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    times.sort();
    times[tries / 2]
}

/// A refusal costs one argon2 check whatever was wrong, so its time does not tell
/// whether the id exists. Compared as a ratio of medians of interleaved rounds, on
/// a loose bound: without the decoy check an unknown id is refused ~50 times faster.
async fn a_refusal_takes_as_long_for_an_unknown_id_as_for_a_wrong_secret() {
    // Dozens of refusals from one address: lift the brute-force limit.
    let app = common::spawn_app_with(&Backend::Sqlite, |config| {
        config.auth.max_failures = 1_000_000;
    })
    .await;
    app.create_client("generated", &[]).await;
    let (mut known, mut generated, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        known.push(median_refusal(&app, "admin", 5).await);
        generated.push(median_refusal(&app, "generated", 5).await);
        unknown.push(median_refusal(&app, "nobody-of-that-name", 5).await);
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap();
    let (known, generated, unknown) = (best(&known), best(&generated), best(&unknown));
    for (what, time) in [
        ("a generated secret's id", generated),
        ("an unknown id", unknown),
    ] {
        let ratio = time.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.4..2.5).contains(&ratio),
            "{what} is refused in {time:?}, a chosen secret's in {known:?}"
        );
    }
}

/// A server allowing 3 failures in 2 s.
async fn strict(backend: &Backend) -> TestApp {
    common::spawn_app_with(backend, |config| {
        config.auth.max_failures = 3;
        config.auth.failure_window = Duration::from_secs(2);
    })
    .await
}

/// Asserts a 429 with `Retry-After` of 1 to `most` seconds.
async fn assert_locked_out(response: Response, most: u64) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a 429 carries Retry-After in seconds");
    assert!(
        (1..=most).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    common::assert_error_prefix(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests - too many failed credential checks",
    )
    .await;
}

/// A client whose connections come from `127.0.0.<n>`, as if from another host.
fn from_address(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

/// Three wrong secrets for `shop`, each from another address (so no address reaches
/// the limit) and in another form (Basic, Bearer with API-Client-Id, a login): then
/// the right secret is 429 from anywhere, and a login too; other clients are
/// unaffected; once the window has passed, the right secret works again.
async fn too_many_failures_for_an_id_lock_it_out_even_with_the_right_secret(backend: Backend) {
    let app = strict(&backend).await;
    let shop = app.create_client("shop", &["queue:jobs:produce"]).await;
    let other = app.create_client("other", &["queue:jobs:produce"]).await;
    let whoami = |id: &str, secret: &str| {
        app.as_client(id, secret, Method::GET, "/api/v1/auth/whoami")
            .send()
    };
    assert_eq!(
        whoami("shop", &shop).await.unwrap().status(),
        StatusCode::OK
    );
    let url = app.url("/api/v1/auth/whoami");
    let wrong = "a-wrong-secret-for-shop";
    let attempts = [
        from_address(2).get(&url).basic_auth("shop", Some(wrong)),
        from_address(3)
            .get(&url)
            .bearer_auth(wrong)
            .header("API-Client-Id", "shop"),
        from_address(4)
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"username": "shop", "password": wrong})),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_locked_out(whoami("shop", &shop).await.unwrap(), 2).await;
    assert_locked_out(login(&app, "shop", &shop).await, 2).await;
    assert_eq!(
        whoami("other", &other).await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        whoami("shop", &shop).await.unwrap().status(),
        StatusCode::OK
    );
}

/// Failures for made-up ids all come from one address: after three, that address
/// is refused for every id, the admin's right secret included, until the window passes.
async fn too_many_failures_from_an_address_lock_it_out_for_every_id(backend: Backend) {
    let app = strict(&backend).await;
    for n in 0..3 {
        let response = app
            .as_client(
                &format!("guess-{n}"),
                "a-guessed-secret",
                Method::GET,
                "/api/v1/auth/whoami",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let admin = app
        .as_admin(Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_locked_out(admin, 2).await;
    let forged = with_token(&app, "not.a.token", Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_locked_out(forged, 2).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let admin = app
        .as_admin(Method::GET, "/api/v1/auth/whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
}

/// A real `hopper serve` at `RUST_LOG=trace`, through logins right and wrong, token
/// and secret use, client creation and a lock-out: its whole log holds no secret,
/// no stored hash and no token, whole or in part.
async fn no_secret_hash_or_token_reaches_the_log_even_at_trace_level() {
    const ADMIN: &str = "log-admin-secret-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let log_path = dir.path().join("hopper.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hopper"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--store")
        .arg(format!("sqlite://{}/hopper.db", dir.path().display()))
        .env("HOPPER_ADMIN_SECRET", ADMIN)
        .env("RUST_LOG", "trace")
        .env_remove("HOPPER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "hopper did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chosen = "a-chosen-secret-for-the-log-test";
    http.post(format!("{base}/api/v1/admin/clients"))
        .basic_auth("admin", Some(ADMIN))
        .json(&json!({"id": "chosen", "secret": chosen, "grants": ["queue:q:*"]}))
        .send()
        .await
        .unwrap();
    let generated: Value = http
        .post(format!("{base}/api/v1/admin/clients"))
        .basic_auth("admin", Some(ADMIN))
        .json(&json!({"id": "generated", "grants": ["queue:q:*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = generated["secret"].as_str().unwrap().to_owned();
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .form(&[("username", "chosen"), ("password", chosen)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    for request in [
        http.post(format!("{base}/api/v1/queues/q/messages"))
            .bearer_auth(&token)
            .json(&json!(1)),
        http.post(format!("{base}/api/v1/queues/q/messages"))
            .bearer_auth(&generated)
            .header("API-Client-Id", "generated")
            .json(&json!(2)),
        http.get(format!("{base}/api/v1/auth/whoami"))
            .basic_auth("chosen", Some(chosen)),
    ] {
        assert!(request.send().await.unwrap().status().is_success());
    }
    let wrong = "a-wrong-secret-that-must-not-be-logged";
    for _ in 0..12 {
        http.post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "chosen", "password": wrong}))
            .send()
            .await
            .unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("request"), "the log is not empty: {log}");
    let signature = token.rsplit('.').next().unwrap();
    let hashes = ["$argon2id$", "sha256$"];
    for (what, needle) in [
        ("the admin secret", ADMIN),
        ("a chosen secret", chosen),
        ("a generated secret", generated.as_str()),
        ("a wrong secret", wrong),
        ("a token", token.as_str()),
        ("a token's signature", signature),
        ("an argon2 hash", hashes[0]),
        ("a generated secret's hash", hashes[1]),
    ] {
        assert!(!log.contains(needle), "{what} is in the log");
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("chosen:{chosen}"));
    assert!(!log.contains(&basic), "Basic credentials are in the log");
}

/// Basic names its client; an `API-Client-Id` beside it (empty, another id, or the
/// same) makes the credentials ambiguous, and the request is refused as any wrong
/// credentials are, with nothing pushed.
async fn an_api_client_id_beside_basic_is_refused(app: TestApp) {
    for client_id in ["", "someone-else", "admin"] {
        let response = app
            .as_admin(Method::POST, "/api/v1/queues/claims/messages")
            .header("API-Client-Id", client_id)
            .json(&json!({"n": 1}))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    }
    let plain = app
        .as_admin(Method::POST, "/api/v1/queues/claims/messages")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::CREATED);
    assert_eq!(
        app.counts("claims").await.0,
        1,
        "only the unambiguous push landed"
    );
}
