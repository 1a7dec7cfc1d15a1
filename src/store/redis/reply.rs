//! Reading a script's reply: a flat array of fields, read in order. Each script's
//! header (`lua/`) says what its reply holds; the first field after the wake-ups is
//! a status, turned into a [`StoreError`] here, in one place, for every script.

use redis::Value;

use crate::domain::{StoreError, StoreResult};

/// The fields of a reply, read front to back.
pub struct Fields {
    context: &'static str,
    values: std::vec::IntoIter<Value>,
}

/// A reply that does not have the shape its script promises: a Hopper bug, or keys
/// changed by something other than Hopper.
pub fn malformed(context: &'static str, what: &str) -> StoreError {
    StoreError::backend(
        context,
        std::io::Error::other(format!("unexpected reply from Redis: {what}")),
    )
}

/// A field as text.
pub fn text(context: &'static str, value: Value) -> StoreResult<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| malformed(context, "text that is not UTF-8"))
        }
        Value::SimpleString(text) => Ok(text),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(malformed(
            context,
            &format!("{other:?} where text was expected"),
        )),
    }
}

impl Fields {
    /// The fields of `values`.
    pub fn new(context: &'static str, values: Vec<Value>) -> Fields {
        Fields {
            context,
            values: values.into_iter(),
        }
    }

    fn next(&mut self) -> StoreResult<Value> {
        self.values
            .next()
            .ok_or_else(|| malformed(self.context, "fewer fields than expected"))
    }

    /// Whether fields are left.
    pub fn is_empty(&self) -> bool {
        self.values.len() == 0
    }

    /// The next field, an array.
    pub fn array(&mut self) -> StoreResult<Vec<Value>> {
        match self.next()? {
            Value::Array(values) => Ok(values),
            Value::Nil => Ok(Vec::new()),
            other => Err(malformed(
                self.context,
                &format!("{other:?} where an array was expected"),
            )),
        }
    }

    /// The next field, text.
    pub fn text(&mut self) -> StoreResult<String> {
        let value = self.next()?;
        text(self.context, value)
    }

    /// The next field, as the bytes Redis holds (an entry of a byte log).
    pub fn bytes(&mut self) -> StoreResult<Vec<u8>> {
        match self.next()? {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            other => Err(malformed(
                self.context,
                &format!("{other:?} where bytes were expected"),
            )),
        }
    }

    /// The next field, text, `None` when empty.
    pub fn optional_text(&mut self) -> StoreResult<Option<String>> {
        Ok(Some(self.text()?).filter(|t| !t.is_empty()))
    }

    /// The next field, text, `None` when Nil (a field the script found absent).
    pub fn nullable_text(&mut self) -> StoreResult<Option<String>> {
        match self.next()? {
            Value::Nil => Ok(None),
            value => text(self.context, value).map(Some),
        }
    }

    /// The next field, an integer, `None` when Nil.
    pub fn nullable_int(&mut self) -> StoreResult<Option<i64>> {
        match self.values.as_slice().first() {
            Some(Value::Nil) => {
                self.next()?;
                Ok(None)
            }
            _ => self.int().map(Some),
        }
    }

    /// The next field, an integer.
    pub fn int(&mut self) -> StoreResult<i64> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            Value::BulkString(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| malformed(self.context, "text where a number was expected")),
            other => Err(malformed(
                self.context,
                &format!("{other:?} where a number was expected"),
            )),
        }
    }

    /// The next field, a count or size.
    pub fn count(&mut self) -> StoreResult<u64> {
        let n = self.int()?;
        u64::try_from(n).map_err(|_| malformed(self.context, "a negative count"))
    }

    /// The status field: `ok`, or an error for the script's refusal.
    pub fn status(&mut self, queue_or_stream: &str) -> StoreResult<Status> {
        let status = self.text()?;
        match status.as_str() {
            "ok" | "new" => Ok(Status::Ok),
            "dup" => Ok(Status::Duplicate),
            "locked" => Ok(Status::Locked),
            "closed" => Ok(Status::Closed),
            "notask" => Ok(Status::NoTask),
            "noevent" => Ok(Status::NoEvent),
            "wrong" => Ok(Status::WrongMessage),
            "stale" => Ok(Status::Stale),
            "changed" => Ok(Status::Changed),
            "noqueue" => Err(StoreError::QueueNotFound(queue_or_stream.to_owned())),
            "nostream" => Err(StoreError::StreamNotFound(queue_or_stream.to_owned())),
            other => Err(malformed(self.context, &format!("status {other:?}"))),
        }
    }
}

/// How a script answered, when it was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok,
    /// An idempotency key seen inside its window.
    Duplicate,
    /// The stream belongs to another producer.
    Locked,
    /// The stream takes no more seed-004 events (closed, or not JSON).
    Closed,
    /// No such task.
    NoTask,
    /// No such event.
    NoEvent,
    /// A receipt of another message than the task's.
    WrongMessage,
    /// The receipt no longer holds the lease, or the task is finished.
    Stale,
    /// The stream changed since the state a guarded write was decided on: read again.
    Changed,
}
