//! Records and cursors (see [`crate::domain::RecordStore`]). Not yet kept on this store.

use async_trait::async_trait;

use super::PostgresStore;
use crate::domain::clock::Millis;
use crate::domain::{EventId, RecordKind, RecordStore, StoreError, StoreResult, StreamName};

const UNSUPPORTED: StoreError = StoreError::Unsupported("records and cursors");

#[async_trait]
impl RecordStore for PostgresStore {
    async fn put_record(&self, _: RecordKind, _: &str, _: &str) -> StoreResult<bool> {
        Err(UNSUPPORTED)
    }
    async fn record(&self, _: RecordKind, _: &str) -> StoreResult<Option<String>> {
        Err(UNSUPPORTED)
    }
    async fn records(&self, _: RecordKind) -> StoreResult<Vec<(String, String)>> {
        Err(UNSUPPORTED)
    }
    async fn delete_record(&self, _: RecordKind, _: &str) -> StoreResult<bool> {
        Err(UNSUPPORTED)
    }
    async fn cursor(&self, _: RecordKind, _: &str) -> StoreResult<Option<i64>> {
        Err(UNSUPPORTED)
    }
    async fn swap_cursor(
        &self,
        _: RecordKind,
        _: &str,
        _: Option<i64>,
        _: i64,
    ) -> StoreResult<bool> {
        Err(UNSUPPORTED)
    }
}

/// The first event of a stream appended at or after a time.
pub(super) async fn event_at(
    _: &PostgresStore,
    _: &StreamName,
    _: Millis,
) -> StoreResult<Option<EventId>> {
    Err(StoreError::Unsupported("finding an event by time"))
}
