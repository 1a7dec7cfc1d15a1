//! AWS Signature Version 4 (`AWS4-HMAC-SHA256` in the `Authorization` header), as
//! AWS SDKs sign SQS requests: the request is parsed, its canonical form rebuilt
//! from the headers the client says it signed, and the signature compared in
//! constant time with one made from the key's secret. What is checked:
//!
//! - the credential scope `KEY/DATE/REGION/sqs/aws4_request`: any region, the service
//!   `sqs`, the date that of the request's time;
//! - the time (`X-Amz-Date`, else `Date`) within 15 minutes of the store's clock;
//! - `host` and every `x-amz-*` header the request carries are signed, so none can
//!   be added or changed on the way (`X-Amz-Target`, which picks the action, above all);
//! - the payload hash is the SHA-256 of the body, whatever the client claims:
//!   `x-amz-content-sha256` (an S3 header) is accepted only when it matches it;
//! - `X-Amz-Security-Token` (temporary credentials) is refused: Hopper issues none.
//!
//! The path is canonicalised as for every service but S3: dot segments and empty
//! segments removed, then each segment URI-encoded once more (a `%` already in the
//! path becomes `%25`). No HTTP crate type crosses [`SignedRequest`], so the edge
//! that builds it (any HTTP stack) and this module stay apart. Which key a request
//! names, and whether the key still exists, is the [`super::Authenticator`]'s part.

use std::time::Duration;

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{AccessKeyId, StoreError};

/// The one algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service a credential must be scoped to.
pub const SERVICE: &str = "sqs";
/// The last part of every credential scope.
const TERMINATOR: &str = "aws4_request";
/// How far a request's time may be from the server's, either way: AWS's own limit.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Characters left as they are in a canonical query: RFC 3986's unreserved ones.
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same in a canonical path, where `/` separates the segments.
const PATH_ESCAPE: &AsciiSet = &QUERY_ESCAPE.remove(b'/');

/// A request as the edge received it, for [`super::Authenticator::authenticate_sigv4`]:
/// plain data, nothing decoded.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path as sent, still percent-encoded, e.g. `/123456789012/orders`.
    pub path: &'a str,
    /// The query string as sent, without the `?`; empty when there is none.
    pub query: &'a str,
    /// Every header as `(name, value)`, names in lowercase, in the order received; a
    /// header sent several times appears several times. `host` must be there (on
    /// HTTP/2, from `:authority`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The whole body.
    pub body: &'a [u8],
}

impl<'a> SignedRequest<'a> {
    /// Every value of the header `name` (lowercase), in order.
    fn values(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    }

    /// The one value of the header `name`; `Err` when it is sent more than once.
    fn single(&self, name: &'static str) -> Result<Option<&'a str>, SigV4Error> {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (first, None) => Ok(first),
            (Some(_), Some(_)) => Err(SigV4Error::Malformed(format!(
                "the header {name} is sent more than once"
            ))),
            (None, Some(_)) => unreachable!("a second value without a first"),
        }
    }
}

/// Why a SigV4 request was refused. Each variant names the SQS error code and HTTP
/// status the SQS edge answers it with; the message (`Display`) is written for the
/// caller and never tells more than the code does.
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header: `MissingAuthenticationToken`, 403.
    #[error("Request is missing Authentication Token: sign it with AWS Signature Version 4 (AWS4-HMAC-SHA256)")]
    MissingAuthentication,
    /// The `Authorization` header, the scope, the time header or the signed headers
    /// are malformed or incomplete; the text says which: `IncompleteSignature`, 400.
    #[error("{0}")]
    Malformed(String),
    /// No such access key (never issued, deleted, or its client deleted):
    /// `InvalidClientTokenId`, 403.
    #[error("The security token included in the request is invalid: no such access key id")]
    UnknownKey,
    /// The signature is not the one the key's secret makes for this request:
    /// `SignatureDoesNotMatch`, 403.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureMismatch,
    /// The request's time is more than [`MAX_SKEW`] from the server's:
    /// `RequestExpired`, 400.
    #[error("Request has expired: its time {request_time} is more than 15 minutes from the server's time {server_time}")]
    RequestExpired {
        /// The request's time, as `YYYYMMDDTHHMMSSZ`.
        request_time: String,
        /// The server's, likewise.
        server_time: String,
    },
    /// `X-Amz-Security-Token` was sent: temporary credentials (STS) are not
    /// supported: `InvalidClientTokenId`, 403.
    #[error("Temporary credentials (X-Amz-Security-Token) are not supported: sign with an access key issued by Hopper, without a session token")]
    TemporaryCredentials,
    /// Too many failed checks for this access key or from this address lately:
    /// refused unchecked for this long (see [`super::limiter`]): `ThrottlingException`,
    /// 429 with `Retry-After` (SDKs retry it by its code).
    #[error("too many failed credential checks")]
    TooManyFailures(Duration),
    /// The key exists but its secret cannot be opened on this node: no secret key is
    /// configured, or not the one it was sealed under. A fault of the deployment,
    /// logged here: `InternalFailure`, 500.
    #[error("the secret of this access key cannot be opened on this server")]
    CannotOpenSecret,
    /// The store could not be asked: `ServiceUnavailable`, 503 (`InternalFailure`,
    /// 500, for a backend failure that is not an outage).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SigV4Error {
    /// Whether the refusal counts against the access key and the address in the
    /// failure limiter: those a guesser of keys or signatures gets. A malformed
    /// request or a stale clock guesses nothing.
    pub(super) fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            SigV4Error::UnknownKey
                | SigV4Error::SignatureMismatch
                | SigV4Error::TemporaryCredentials
        )
    }
}

fn malformed(text: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(text.into())
}

/// The `Authorization` header taken apart, unverified.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Authorization<'a> {
    /// As claimed; not yet known to be well-formed (see [`Authorization::key_id`]).
    pub access_key_id: &'a str,
    /// `YYYYMMDD`.
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// As the client listed them, `;`-separated.
    pub signed_headers: &'a str,
    /// The signature, decoded from its 64 hex digits.
    pub signature: [u8; 32],
}

impl Authorization<'_> {
    /// The claimed access key id, if it is one Hopper could have issued.
    pub fn key_id(&self) -> Option<AccessKeyId> {
        AccessKeyId::parse(self.access_key_id).ok()
    }
}

/// Reads the request's `Authorization` header.
pub(super) fn parse_authorization<'a>(
    request: &SignedRequest<'a>,
) -> Result<Authorization<'a>, SigV4Error> {
    let value = request
        .single("authorization")?
        .ok_or(SigV4Error::MissingAuthentication)?
        .trim();
    let (algorithm, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(malformed(format!(
            "Unsupported Authorization algorithm {algorithm:?}: only {ALGORITHM} is accepted"
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| {
            malformed(format!(
                "Authorization header part {part:?} is not name=value"
            ))
        })?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => {
                return Err(malformed(format!(
                    "Authorization header has an unknown part {other:?}"
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(malformed(format!(
                "Authorization header gives {name} twice"
            )));
        }
    }
    let require = |value: Option<&'a str>, name: &str| {
        value.ok_or_else(|| malformed(format!("Authorization header requires '{name}' parameter")))
    };
    let credential = require(credential, "Credential")?;
    let signed_headers = require(signed_headers, "SignedHeaders")?;
    let signature = require(signature, "Signature")?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(malformed(format!(
            "Credential {credential:?} is not KEY/DATE/REGION/SERVICE/{TERMINATOR}"
        )));
    };
    if access_key_id.is_empty()
        || region.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || terminator != TERMINATOR
    {
        return Err(malformed(format!(
            "Credential {credential:?} is not KEY/YYYYMMDD/REGION/SERVICE/{TERMINATOR}"
        )));
    }
    if service != SERVICE {
        return Err(malformed(format!(
            "Credential should be scoped to the service '{SERVICE}', not {service:?}"
        )));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature: decode_signature(signature)?,
    })
}

fn decode_signature(hex: &str) -> Result<[u8; 32], SigV4Error> {
    let bad = || malformed("Signature is not 64 lowercase hexadecimal digits");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut signature = [0u8; 32];
    for (byte, pair) in signature.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let digit = |d: u8| match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        };
        *byte = (digit(pair[0]).ok_or_else(bad)? << 4) | digit(pair[1]).ok_or_else(bad)?;
    }
    Ok(signature)
}

/// What remains to check once the request is known well-formed and on time: that
/// the key's signing key for `date` and `region` signs `string_to_sign` as claimed.
pub(super) struct Challenge {
    /// The string to sign, rebuilt from the request.
    pub string_to_sign: String,
    /// The signature the request carries.
    signature: [u8; 32],
}

impl Challenge {
    /// Whether `signing_key` makes the request's signature; constant time in the signature.
    pub fn is_signed_by(&self, signing_key: &[u8; 32]) -> bool {
        let expected = hmac_sha256(signing_key, self.string_to_sign.as_bytes());
        bool::from(expected.ct_eq(&self.signature))
    }
}

/// Checks everything but the key: no session token, the time within [`MAX_SKEW`] of
/// `now_ms` and the scope's date, `host` and the `x-amz-*` headers signed, the
/// payload hash; and rebuilds the string to sign.
pub(super) fn challenge(
    request: &SignedRequest<'_>,
    authorization: &Authorization<'_>,
    now_ms: i64,
) -> Result<Challenge, SigV4Error> {
    let token_in_query = form_urlencoded::parse(request.query.as_bytes())
        .any(|(name, _)| name.eq_ignore_ascii_case("x-amz-security-token"));
    if request.values("x-amz-security-token").next().is_some() || token_in_query {
        return Err(SigV4Error::TemporaryCredentials);
    }
    let signed: Vec<&str> = authorization.signed_headers.split(';').collect();
    check_signed_headers(request, &signed)?;
    let timestamp = request_time(request, &signed, now_ms)?;
    if &timestamp[..8] != authorization.date {
        return Err(malformed(format!(
            "Date in Credential scope {} does not match the date of the request's time {timestamp}",
            authorization.date
        )));
    }
    let payload_hash = payload_hash(request)?;
    let canonical = canonical_request(request, &signed, &payload_hash);
    let scope = format!(
        "{}/{}/{}/{TERMINATOR}",
        authorization.date, authorization.region, authorization.service
    );
    Ok(Challenge {
        string_to_sign: string_to_sign(&timestamp, &scope, &canonical),
        signature: authorization.signature,
    })
}

/// Refuses signed header names that are not lowercase tokens or name a header the
/// request lacks, and requests whose `host` or an `x-amz-*` header is unsigned.
fn check_signed_headers(request: &SignedRequest<'_>, signed: &[&str]) -> Result<(), SigV4Error> {
    for name in signed {
        let token = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
            });
        if !token {
            return Err(malformed(format!(
                "SignedHeaders lists {name:?}: header names must be lowercase, separated by ;"
            )));
        }
        if request.values(name).next().is_none() {
            return Err(malformed(format!(
                "SignedHeaders lists {name}, which the request does not carry"
            )));
        }
    }
    if !signed.contains(&"host") {
        return Err(malformed("SignedHeaders must include host"));
    }
    for (name, _) in request.headers {
        let name = name.to_ascii_lowercase();
        if name.starts_with("x-amz-") && !signed.contains(&name.as_str()) {
            return Err(malformed(format!(
                "the header {name} must be signed (listed in SignedHeaders)"
            )));
        }
    }
    Ok(())
}

/// The request's time as `YYYYMMDDTHHMMSSZ`, from `x-amz-date`, else from a signed
/// `date`, if it is within [`MAX_SKEW`] of `now_ms`.
fn request_time(
    request: &SignedRequest<'_>,
    signed: &[&str],
    now_ms: i64,
) -> Result<String, SigV4Error> {
    let time = if let Some(amz_date) = request.single("x-amz-date")? {
        let amz_date = amz_date.trim();
        chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
            .ok()
            .filter(|_| amz_date.len() == 16)
            .map(|time| time.and_utc())
            .ok_or_else(|| {
                malformed(format!(
                    "X-Amz-Date {amz_date:?} is not of the form YYYYMMDDTHHMMSSZ"
                ))
            })?
    } else if let Some(date) = request.single("date")? {
        if !signed.contains(&"date") {
            return Err(malformed(
                "the header date gives the request's time, so it must be signed",
            ));
        }
        chrono::DateTime::parse_from_rfc2822(date.trim())
            .map(|time| time.to_utc())
            .map_err(|_| malformed(format!("Date {date:?} is not an HTTP date")))?
    } else {
        return Err(malformed(
            "Authorization requires an X-Amz-Date or a Date header giving the request's time",
        ));
    };
    let format = |time: chrono::DateTime<chrono::Utc>| time.format("%Y%m%dT%H%M%SZ").to_string();
    let skew_ms = (time.timestamp_millis() - now_ms).unsigned_abs();
    if skew_ms > MAX_SKEW.as_millis() as u64 {
        return Err(SigV4Error::RequestExpired {
            request_time: format(time),
            server_time: format(
                chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default(),
            ),
        });
    }
    Ok(format(time))
}

/// The hex SHA-256 of the body; a claimed `x-amz-content-sha256` must be that.
fn payload_hash(request: &SignedRequest<'_>) -> Result<String, SigV4Error> {
    let hash = hex(&Sha256::digest(request.body));
    match request.single("x-amz-content-sha256")? {
        Some(claimed) if claimed.trim() != hash => Err(malformed(
            "x-amz-content-sha256 is not the SHA-256 of the body: the payload must be signed whole",
        )),
        _ => Ok(hash),
    }
}

/// The canonical request: method, path, query, the `signed` headers with their
/// values, the list of them, and the payload hash, one per line.
pub(super) fn canonical_request(
    request: &SignedRequest<'_>,
    signed: &[&str],
    payload_hash: &str,
) -> String {
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query)
    );
    for name in signed {
        let values: Vec<String> = request.values(name).map(canonical_header_value).collect();
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed.join(";"));
    canonical.push('\n');
    canonical.push_str(payload_hash);
    canonical
}

/// The path with dot and empty segments removed (RFC 3986 5.2.4, as AWS SDKs
/// normalise it for every service but S3), each byte outside the unreserved set
/// and `/` then percent-encoded; a trailing `/` stays.
fn canonical_path(path: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    let trailing = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|end| path.ends_with(end));
    if trailing && !normalized.ends_with('/') {
        normalized.push('/');
    }
    utf8_percent_encode(&normalized, PATH_ESCAPE).to_string()
}

/// The query's parameters decoded (as a form: `+` is a space), encoded again the
/// one canonical way and sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| {
            (
                utf8_percent_encode(&name, QUERY_ESCAPE).to_string(),
                utf8_percent_encode(&value, QUERY_ESCAPE).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value trimmed, each run of whitespace inside it one space.
fn canonical_header_value(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The string a client signs for `request`, made at `timestamp` (`YYYYMMDDTHHMMSSZ`)
/// within `scope` (`DATE/REGION/sqs/aws4_request`), with the headers `signed`
/// (lowercase, sorted) and the body's SHA-256 as its payload hash: the same
/// canonicalisation the verifier rebuilds, so a client of Hopper's own (`hopper
/// bench`) signs by the rules it is checked by. The HMAC is the client's.
pub fn client_string_to_sign(
    request: &SignedRequest<'_>,
    signed: &[&str],
    timestamp: &str,
    scope: &str,
) -> String {
    let payload_hash = hex(&Sha256::digest(request.body));
    string_to_sign(
        timestamp,
        scope,
        &canonical_request(request, signed, &payload_hash),
    )
}

/// The string to sign of a canonical request made at `timestamp` within `scope`.
pub(super) fn string_to_sign(timestamp: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The key that signs a day's requests to `service` in `region`, derived from a
/// secret access key.
pub(super) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let date_key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let region_key = hmac_sha256(&date_key, region.as_bytes());
    let service_key = hmac_sha256(&region_key, service.as_bytes());
    hmac_sha256(&service_key, TERMINATOR.as_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    //! The vectors of the AWS SigV4 test suite (as smithy-rs keeps it under
    //! `aws/rust-runtime/aws-sigv4/aws-signing-test-suite/v4/`): each request as
    //! signed, with the canonical request, string to sign and signature AWS gives.
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const TIMESTAMP: &str = "20150830T123600Z";
    const SCOPE: &str = "20150830/us-east-1/service/aws4_request";

    struct Vector {
        request: SignedRequest<'static>,
        signed_headers: &'static str,
        canonical_request: &'static str,
        string_to_sign_hash: &'static str,
        signature: &'static str,
    }

    fn check(vector: Vector) {
        let signed: Vec<&str> = vector.signed_headers.split(';').collect();
        let payload_hash = hex(&Sha256::digest(vector.request.body));
        let canonical = canonical_request(&vector.request, &signed, &payload_hash);
        assert_eq!(canonical, vector.canonical_request);
        let to_sign = string_to_sign(TIMESTAMP, SCOPE, &canonical);
        assert_eq!(
            to_sign,
            format!(
                "AWS4-HMAC-SHA256\n{TIMESTAMP}\n{SCOPE}\n{}",
                vector.string_to_sign_hash
            )
        );
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        assert_eq!(
            hex(&hmac_sha256(&key, to_sign.as_bytes())),
            vector.signature
        );
        let challenge = Challenge {
            string_to_sign: to_sign,
            signature: decode_signature(vector.signature).unwrap(),
        };
        assert!(challenge.is_signed_by(&key));
        assert!(!challenge.is_signed_by(&signing_key(
            "another secret",
            "20150830",
            "us-east-1",
            "service"
        )));
    }

    #[test]
    fn get_vanilla() {
        check(Vector {
            request: SignedRequest {
                method: "GET",
                path: "/",
                query: "",
                headers: &[("host", "example.amazonaws.com"), ("x-amz-date", TIMESTAMP)],
                body: b"",
            },
            signed_headers: "host;x-amz-date",
            canonical_request: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            string_to_sign_hash: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        });
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        check(Vector {
            request: SignedRequest {
                method: "POST",
                path: "/",
                query: "",
                headers: &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", "example.amazonaws.com"),
                    ("content-length", "13"),
                    ("x-amz-date", TIMESTAMP),
                    ("x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
                ],
                body: b"Param1=value1",
            },
            signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            canonical_request: "POST\n/\n\ncontent-length:13\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\nx-amz-date:20150830T123600Z\n\ncontent-length;content-type;host;x-amz-content-sha256;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            string_to_sign_hash: "b1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb",
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        });
    }

    #[test]
    fn get_vanilla_query_order_encoded() {
        check(Vector {
            request: SignedRequest {
                method: "GET",
                path: "/",
                query: "Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
                headers: &[("host", "example.amazonaws.com"), ("x-amz-date", TIMESTAMP)],
                body: b"",
            },
            signed_headers: "host;x-amz-date",
            canonical_request: "GET\n/\n%E1%88%B4=Value1&Param=Value2&Param-3=Value3\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            string_to_sign_hash: "868294f5c38bd141c4972a373a76654f1418a8e4fc18b2e7903ae45e8ae0ec71",
            signature: "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        });
    }

    #[test]
    fn get_utf8_and_get_space_encode_the_path() {
        check(Vector {
            request: SignedRequest {
                method: "GET",
                path: "/ሴ",
                query: "",
                headers: &[("host", "example.amazonaws.com"), ("x-amz-date", TIMESTAMP)],
                body: b"",
            },
            signed_headers: "host;x-amz-date",
            canonical_request: "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            string_to_sign_hash: "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
            signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        });
        check(Vector {
            request: SignedRequest {
                method: "GET",
                path: "/example space/",
                query: "",
                headers: &[("host", "example.amazonaws.com"), ("x-amz-date", TIMESTAMP)],
                body: b"",
            },
            signed_headers: "host;x-amz-date",
            canonical_request: "GET\n/example%20space/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            string_to_sign_hash: "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86",
            signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        });
    }

    #[test]
    fn header_values_are_trimmed_collapsed_and_joined() {
        check(Vector {
            request: SignedRequest {
                method: "GET",
                path: "/",
                query: "",
                headers: &[
                    ("host", "example.amazonaws.com"),
                    ("my-header1", " value1"),
                    ("my-header2", " \"a   b   c\""),
                    ("x-amz-date", TIMESTAMP),
                ],
                body: b"",
            },
            signed_headers: "host;my-header1;my-header2;x-amz-date",
            canonical_request: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            string_to_sign_hash: "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        });
        check(Vector {
            request: SignedRequest {
                method: "GET",
                path: "/",
                query: "",
                headers: &[
                    ("host", "example.amazonaws.com"),
                    ("my-header1", "value2"),
                    ("my-header1", "value2"),
                    ("my-header1", "value1"),
                    ("x-amz-date", TIMESTAMP),
                ],
                body: b"",
            },
            signed_headers: "host;my-header1;x-amz-date",
            canonical_request: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            string_to_sign_hash: "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        });
    }

    #[test]
    fn paths_are_normalised_then_encoded_once_more() {
        assert_eq!(canonical_path("/example1/example2/../.."), "/");
        assert_eq!(canonical_path("/./"), "/");
        assert_eq!(canonical_path("//example//"), "/example/");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(
            canonical_path("/123456789012/orders"),
            "/123456789012/orders"
        );
        // smithy-rs's double-encode-path vector: a `%` already in the path is encoded again.
        assert_eq!(
            canonical_path("/test/@connections/JBDvjfGEIAMCERw%3D"),
            "/test/%40connections/JBDvjfGEIAMCERw%253D"
        );
        assert_eq!(canonical_query("b=2&a=&a=1&c"), "a=&a=1&b=2&c=");
        assert_eq!(canonical_query("q=a+b&r=%7e"), "q=a%20b&r=~");
    }

    #[test]
    fn the_authorization_header_is_read_whole_or_refused() {
        let header = "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/20150830/eu-west-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let request = |authorization: &'static str| SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: Box::leak(Box::new([("authorization", authorization)])),
            body: b"",
        };
        let parsed = parse_authorization(&request(header)).unwrap();
        assert_eq!(parsed.access_key_id, "HOPRABCDEFGHIJ234567");
        assert_eq!(
            (parsed.date, parsed.region, parsed.service),
            ("20150830", "eu-west-1", "sqs")
        );
        assert_eq!(parsed.signed_headers, "host;x-amz-date");
        let compact = header.replace(", ", ",");
        assert_eq!(
            parse_authorization(&request(Box::leak(compact.into_boxed_str()))).unwrap(),
            parsed
        );

        let no_auth = SignedRequest {
            headers: &[],
            ..request(header)
        };
        assert!(matches!(
            parse_authorization(&no_auth),
            Err(SigV4Error::MissingAuthentication)
        ));
        for bad in [
            "AWS4-HMAC-SHA256",
            "AWS AKID:signature",
            "AWS4-ECDSA-P256-SHA256 Credential=A/20150830/sqs/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/20150830/eu-west-1/sqs/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/20150830/eu-west-1/sqs/aws4_request, SignedHeaders=host, Signature=XYZ",
            "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/2015-08-30/eu-west-1/sqs/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/20150830/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/20150830/eu-west-1/sqs, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=A/20150830/x/sqs/aws4_request, Credential=A/20150830/x/sqs/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            assert!(
                matches!(parse_authorization(&request(bad)), Err(SigV4Error::Malformed(_))),
                "{bad}"
            );
        }
    }
}
