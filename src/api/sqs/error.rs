//! SQS's errors: every refusal of the SQS endpoint is one of these, mapped from
//! the domain's and the authenticator's errors here and nowhere else. A JSON
//! answer names the error in `__type` and its legacy query code in
//! `x-amzn-query-error`, so SDKs that match either find it.

use axum::http::StatusCode;

use crate::auth::SigV4Error;
use crate::domain::DomainError;

/// One SQS error: its JSON name, its query-protocol code, its status and who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The name in a JSON answer's `__type` (after `com.amazonaws.sqs#`).
    pub json: &'static str,
    /// The code of the query protocol, also sent in `x-amzn-query-error`.
    pub query: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// The caller's fault (`Sender`), or the service's (`Receiver`).
    pub sender: bool,
}

macro_rules! codes {
    ($($name:ident = $json:literal, $query:literal, $status:ident, $sender:literal;)*) => {
        $(
            #[doc = concat!("`", $json, "`.")]
            pub const $name: Code = Code {
                json: $json,
                query: $query,
                status: StatusCode::$status,
                sender: $sender,
            };
        )*
    };
}

codes! {
    QUEUE_DOES_NOT_EXIST = "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", BAD_REQUEST, true;
    QUEUE_NAME_EXISTS = "QueueNameExists", "QueueAlreadyExists", BAD_REQUEST, true;
    INVALID_ATTRIBUTE_NAME = "InvalidAttributeName", "InvalidAttributeName", BAD_REQUEST, true;
    INVALID_ATTRIBUTE_VALUE = "InvalidAttributeValue", "InvalidAttributeValue", BAD_REQUEST, true;
    INVALID_PARAMETER_VALUE = "InvalidParameterValue", "InvalidParameterValue", BAD_REQUEST, true;
    MISSING_PARAMETER = "MissingParameter", "MissingParameter", BAD_REQUEST, true;
    INVALID_ACTION = "InvalidAction", "InvalidAction", BAD_REQUEST, true;
    RECEIPT_HANDLE_IS_INVALID = "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", BAD_REQUEST, true;
    MESSAGE_NOT_INFLIGHT = "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", BAD_REQUEST, true;
    EMPTY_BATCH_REQUEST = "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", BAD_REQUEST, true;
    TOO_MANY_ENTRIES = "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", BAD_REQUEST, true;
    BATCH_IDS_NOT_DISTINCT = "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", BAD_REQUEST, true;
    INVALID_BATCH_ENTRY_ID = "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", BAD_REQUEST, true;
    BATCH_REQUEST_TOO_LONG = "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", BAD_REQUEST, true;
    INVALID_MESSAGE_CONTENTS = "InvalidMessageContents", "InvalidMessageContents", BAD_REQUEST, true;
    UNSUPPORTED_OPERATION = "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", BAD_REQUEST, true;
    MALFORMED_QUERY = "MalformedQueryString", "MalformedQueryString", BAD_REQUEST, true;
    SERIALIZATION = "SerializationException", "SerializationException", BAD_REQUEST, true;
    ACCESS_DENIED = "AccessDenied", "AccessDenied", FORBIDDEN, true;
    MISSING_AUTHENTICATION_TOKEN = "MissingAuthenticationToken", "MissingAuthenticationToken", FORBIDDEN, true;
    INCOMPLETE_SIGNATURE = "IncompleteSignature", "IncompleteSignature", BAD_REQUEST, true;
    INVALID_CLIENT_TOKEN_ID = "InvalidClientTokenId", "InvalidClientTokenId", FORBIDDEN, true;
    SIGNATURE_DOES_NOT_MATCH = "SignatureDoesNotMatch", "SignatureDoesNotMatch", FORBIDDEN, true;
    REQUEST_EXPIRED = "RequestExpired", "RequestExpired", BAD_REQUEST, true;
    THROTTLED = "RequestThrottled", "RequestThrottled", TOO_MANY_REQUESTS, true;
    OVER_LIMIT = "OverLimit", "OverLimit", FORBIDDEN, true;
    REQUEST_TOO_LARGE = "RequestEntityTooLarge", "RequestEntityTooLarge", PAYLOAD_TOO_LARGE, true;
    SERVICE_UNAVAILABLE = "ServiceUnavailable", "ServiceUnavailable", SERVICE_UNAVAILABLE, false;
    INTERNAL_FAILURE = "InternalFailure", "InternalFailure", INTERNAL_SERVER_ERROR, false;
}

/// A refusal of the SQS endpoint: a code and what to tell.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SqsError {
    /// Which error.
    pub code: Code,
    /// What the caller is told.
    pub message: String,
}

impl SqsError {
    /// An error with its text.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        SqsError {
            code,
            message: message.into(),
        }
    }
}

/// The result of an SQS action.
pub type SqsResult<T> = Result<T, SqsError>;

impl From<DomainError> for SqsError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid(message) => SqsError::new(INVALID_PARAMETER_VALUE, message),
            DomainError::NotFound(message) => SqsError::new(
                QUEUE_DOES_NOT_EXIST,
                format!("The specified queue does not exist ({message})."),
            ),
            DomainError::Gone(message) => SqsError::new(QUEUE_DOES_NOT_EXIST, message),
            DomainError::Forbidden(message) => SqsError::new(ACCESS_DENIED, message),
            DomainError::Conflict(message) => SqsError::new(QUEUE_NAME_EXISTS, message),
            DomainError::TooManyWaiters { .. } => SqsError::new(OVER_LIMIT, error.to_string()),
            DomainError::Store(store) => {
                tracing::warn!(error = %store, "sqs: the store failed");
                SqsError::new(
                    SERVICE_UNAVAILABLE,
                    "The store is unavailable; retry later.",
                )
            }
        }
    }
}

impl From<SigV4Error> for SqsError {
    fn from(error: SigV4Error) -> Self {
        let code = match &error {
            SigV4Error::MissingAuthentication => MISSING_AUTHENTICATION_TOKEN,
            SigV4Error::Malformed(_) => INCOMPLETE_SIGNATURE,
            SigV4Error::UnknownKey | SigV4Error::TemporaryCredentials => INVALID_CLIENT_TOKEN_ID,
            SigV4Error::SignatureMismatch => SIGNATURE_DOES_NOT_MATCH,
            SigV4Error::RequestExpired { .. } => REQUEST_EXPIRED,
            SigV4Error::CannotOpenSecret => INTERNAL_FAILURE,
            SigV4Error::TooManyFailures(_) => THROTTLED,
            SigV4Error::Store(store) => {
                tracing::warn!(error = %store, "sqs: the store failed during authentication");
                SERVICE_UNAVAILABLE
            }
        };
        SqsError::new(code, error.to_string())
    }
}
