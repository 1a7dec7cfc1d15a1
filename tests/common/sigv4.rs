//! Requests signed with AWS Signature Version 4 by smithy-rs's `aws-sigv4`, the
//! signer of the AWS SDK for Rust: an implementation independent of Hopper's, so a
//! test of the verifier checks it against what real clients send.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use hopper::auth::SignedRequest;

/// The host SQS clients of these tests send to.
pub const HOST: &str = "sqs.eu-west-1.hopper.test";

/// A request as it would reach the server: owned, so a test can change it after
/// signing (a tampered body, an added header).
#[derive(Debug, Clone)]
pub struct AwsRequest {
    /// `POST`, say.
    pub method: String,
    /// The path, percent-encoded.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// `(lowercase name, value)`, `host` included.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// How to sign.
#[derive(Debug, Clone)]
pub struct Signer<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// Its secret.
    pub secret: &'a str,
    /// A session token (temporary credentials), sent as `X-Amz-Security-Token`.
    pub session_token: Option<&'a str>,
    /// The region of the scope.
    pub region: &'a str,
    /// The service of the scope.
    pub service: &'a str,
    /// The request's time.
    pub time: SystemTime,
    /// Whether to send `x-amz-content-sha256` (as S3 clients do).
    pub content_sha256: bool,
}

impl<'a> Signer<'a> {
    /// Signs as an SQS client with this key signs now.
    pub fn new(access_key_id: &'a str, secret: &'a str) -> Signer<'a> {
        Signer {
            access_key_id,
            secret,
            session_token: None,
            region: "eu-west-1",
            service: "sqs",
            time: SystemTime::now(),
            content_sha256: false,
        }
    }
}

impl AwsRequest {
    /// An SQS query-protocol call: `POST /` with a form body, as the SDKs send it.
    pub fn query_protocol(body: &str) -> AwsRequest {
        AwsRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![
                ("host".into(), HOST.into()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    /// An SQS JSON-protocol call: `POST /` with `X-Amz-Target` naming the action.
    pub fn json_protocol(target: &str, body: &str) -> AwsRequest {
        AwsRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![
                ("host".into(), HOST.into()),
                ("content-type".into(), "application/x-amz-json-1.0".into()),
                ("x-amz-target".into(), target.into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Signs the request as it is now, adding `authorization`, `x-amz-date` and
    /// whatever else the signer adds.
    pub fn signed(mut self, signer: &Signer<'_>) -> AwsRequest {
        let identity: Identity = Credentials::new(
            signer.access_key_id,
            signer.secret,
            signer.session_token.map(str::to_owned),
            None,
            "tests",
        )
        .into();
        let mut settings = SigningSettings::default();
        if signer.content_sha256 {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(signer.region)
            .name(signer.service)
            .time(signer.time)
            .settings(settings)
            .build()
            .expect("signing parameters")
            .into();
        let query = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        let url = format!("http://{HOST}{}{query}", self.path);
        let signable = SignableRequest::new(
            &self.method,
            url,
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(&self.body),
        )
        .expect("a signable request");
        let (instructions, _signature) = sign(signable, &params)
            .expect("aws-sigv4 signs the request")
            .into_parts();
        let added: Vec<(String, String)> = instructions
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        self.headers.extend(added);
        self
    }

    /// The request with header `name` set to `value` (added, or replacing it).
    pub fn with_header(mut self, name: &str, value: &str) -> AwsRequest {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The request without header `name`.
    pub fn without_header(mut self, name: &str) -> AwsRequest {
        self.headers.retain(|(n, _)| n != name);
        self
    }

    /// The headers as [`SignedRequest`] takes them.
    pub fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    /// The request as the verifier reads it, over `headers` ([`AwsRequest::header_refs`]).
    pub fn as_signed<'a>(&'a self, headers: &'a [(&'a str, &'a str)]) -> SignedRequest<'a> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers,
            body: &self.body,
        }
    }
}
