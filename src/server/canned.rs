//! The JSON answers that stand in for the bare error heads hyper writes by itself
//! (400, 414, 431: a status line, `content-length: 0`, a date) when it cannot parse
//! a request head, so those errors follow the API's conventions too: a seed-004
//! body, the JSON content type and an `X-Request-Id`.
//!
//! This module only builds bytes; *when* a write is one of those heads is decided by
//! [`super::connection`], never by looking at the bytes alone, since any response
//! body may contain text that looks like a status line.

use axum::http::StatusCode;

use crate::api::error::error_body;

/// The content type of every Hopper answer.
const JSON: &str = "application/json; charset=utf-8";

/// The answer replacing `head`, hyper's own error head, or `None` when `head` is not
/// one (then it is sent as it is). `max_header_bytes` goes into the 431's detail.
pub(super) fn replacement(head: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    let code = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(code).ok()?;
    let detail = match status {
        StatusCode::BAD_REQUEST => "malformed request head".to_owned(),
        StatusCode::URI_TOO_LONG => "the request target is too long".to_owned(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            format!("the request head exceeds {max_header_bytes} bytes or 100 fields")
        }
        _ => return None,
    };
    let body = error_body(status, Some(&detail));
    let request_id = uuid::Uuid::new_v4();
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {JSON}\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n",
        body.len()
    )
    .into_bytes();
    // hyper's date is kept: it is formatted and cached per second already.
    if let Some(date) = head
        .split(|&byte| byte == b'\n')
        .find(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:"))
    {
        answer.extend_from_slice(date);
        answer.push(b'\n');
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(body.as_bytes());
    tracing::debug!(status = status.as_u16(), %request_id, "the request head could not be parsed");
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_error_heads_become_json_answers_and_nothing_else_does() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Jun 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement(head, 65536).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncontent-type: application/json; charset=utf-8\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\nx-request-id: "));
        assert!(head.contains("\r\ndate: Mon, 01 Jun 2026 10:00:00 GMT"));
        assert_eq!(
            body,
            r#""Request Header Fields Too Large - the request head exceeds 65536 bytes or 100 fields""#
        );
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\n\r\n",
            b"HTTP/1.0 400 Bad Request\r\n\r\n",
            b"{\"HTTP/1.1 400\"}",
            b"HTTP/1.1 4",
            b"",
        ] {
            assert!(replacement(other, 65536).is_none(), "{other:?}");
        }
    }
}
