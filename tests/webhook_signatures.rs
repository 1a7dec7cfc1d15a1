//! Hopper's webhook signatures checked by the reference Standard Webhooks
//! library (PyPI `standardwebhooks`, unchanged), so "compatible" means what
//! receivers will actually run, not our reading of the spec.

use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hopper::delivery::signing::{sign, Signature};
use hopper::domain::delivery::signing_key;
use serde_json::json;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const OTHER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Reads the cases from the JSON file named by argv[1] and prints, per case,
/// `ok` or the library's error, so Rust decides what each outcome means.
const VERIFY_SCRIPT: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook
with open(sys.argv[1]) as f:
    cases = json.load(f)
results = []
for case in cases:
    try:
        Webhook(case["secret"]).verify(base64.b64decode(case["body"]), case["headers"])
        results.append("ok")
    except Exception as e:
        results.append(f"{type(e).__name__}: {e}")
print(json.dumps(results))
"#;

/// One verification the library is asked to do.
struct Case {
    name: &'static str,
    secret: &'static str,
    headers: Signature,
    body: Vec<u8>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(id: &str, timestamp: i64, body: &[u8]) -> Signature {
    sign(&signing_key(SECRET).unwrap(), id, timestamp, body)
}

/// Installs the library once per test binary; a failed install fails the
/// test, since skipping would report compatibility that was never checked.
fn ensure_library() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import standardwebhooks.webhooks"])
                .output()
                .is_ok_and(|out| out.status.success())
        };
        if importable() {
            return;
        }
        let install = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "standardwebhooks"])
            .output()
            .expect("cannot run python3: it is needed to check signatures with `standardwebhooks`");
        assert!(
            install.status.success() && importable(),
            "could not install the PyPI package `standardwebhooks` \
             (`python3 -m pip install --quiet standardwebhooks`): {}\n{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr),
        );
    });
}

/// The library's verdict on each case, in order: `ok` or its error.
fn verify(cases: &[Case]) -> Vec<String> {
    ensure_library();
    let input: Vec<_> = cases
        .iter()
        .map(|case| {
            json!({
                "secret": case.secret,
                "headers": {
                    "webhook-id": case.headers.id,
                    "webhook-timestamp": case.headers.timestamp,
                    "webhook-signature": case.headers.signature,
                },
                "body": STANDARD.encode(&case.body),
            })
        })
        .collect();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    serde_json::to_writer(&mut file, &input).unwrap();
    file.flush().unwrap();
    let out = Command::new("python3")
        .args(["-c", VERIFY_SCRIPT])
        .arg(file.path())
        .output()
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "verification script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    results
}

#[test]
fn the_reference_library_accepts_hopper_signatures() {
    let now = now();
    let large = serde_json::to_vec(&json!({ "data": "x".repeat(100 * 1024) })).unwrap();
    assert!(large.len() > 100 * 1024);
    let bodies: Vec<(&'static str, Vec<u8>)> = vec![
        ("ascii", br#"{"event": "order.created", "id": 42}"#.to_vec()),
        (
            "unicode",
            r#"{"name": "Zoë Ωμέγα 東京 🚀", "note": "naïve café"}"#.into(),
        ),
        ("empty object", b"{}".to_vec()),
        ("100 KB", large),
    ];
    let cases: Vec<Case> = bodies
        .into_iter()
        .enumerate()
        .map(|(n, (name, body))| Case {
            name,
            secret: SECRET,
            headers: signed(&format!("msg_{n}"), now, &body),
            body,
        })
        .collect();
    for (case, result) in cases.iter().zip(verify(&cases)) {
        assert_eq!(result, "ok", "{} body was rejected", case.name);
    }
}

#[test]
fn the_reference_library_rejects_tampering() {
    let now = now();
    let body = br#"{"amount": 100}"#.to_vec();
    let good = signed("msg_1", now, &body);
    let cases = vec![
        Case {
            name: "tampered body",
            secret: SECRET,
            headers: good.clone(),
            body: br#"{"amount": 900}"#.to_vec(),
        },
        Case {
            name: "wrong secret",
            secret: OTHER_SECRET,
            headers: good.clone(),
            body: body.clone(),
        },
        Case {
            name: "other message id",
            secret: SECRET,
            headers: Signature {
                id: "msg_2".to_owned(),
                ..good.clone()
            },
            body: body.clone(),
        },
        Case {
            name: "signed ten minutes ago",
            secret: SECRET,
            headers: signed("msg_1", now - 600, &body),
            body: body.clone(),
        },
        // The control: without it, the rejections above could be for any reason.
        Case {
            name: "untouched",
            secret: SECRET,
            headers: good,
            body,
        },
    ];
    let results = verify(&cases);
    let (control, tampered) = results.split_last().unwrap();
    assert_eq!(control, "ok", "the untouched delivery was rejected");
    for (case, result) in cases.iter().zip(tampered) {
        assert_ne!(result, "ok", "{} was accepted", case.name);
        assert!(
            result.starts_with("WebhookVerificationError"),
            "{} failed for the wrong reason: {result}",
            case.name
        );
    }
}
