//! AWS access key rows on PostgreSQL: id, client, sealed secret. A foreign key
//! deletes a client's rows with it, and refuses a key for a client that is gone.

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;

use super::clients::announce_revocation;
use super::{column, pg};
use crate::domain::{AccessKeyId, AwsKeyRecord, ClientId};
use crate::domain::{StoreError, StoreResult};

const COLUMNS: &str = "access_key_id, client_id, sealed_secret, created_at";

/// A key from a row of [`COLUMNS`]; `None` for an id this binary does not accept.
fn record_from_row(row: &tokio_postgres::Row) -> StoreResult<Option<AwsKeyRecord>> {
    let read = "read AWS key";
    let (Ok(access_key_id), Ok(client_id)) = (
        AccessKeyId::parse(column(row, 0, read)?),
        ClientId::parse(column(row, 1, read)?),
    ) else {
        return Ok(None);
    };
    Ok(Some(AwsKeyRecord {
        access_key_id,
        client_id,
        sealed_secret: column(row, 2, read)?,
        created_at: column(row, 3, read)?,
    }))
}

/// Inserts a key; `ClientNotFound` when the foreign key finds no client (deleted
/// meanwhile included), `AwsKeyExists` when the id is taken.
pub async fn create(tx: &Transaction<'_>, key: &AwsKeyRecord) -> StoreResult<()> {
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO aws_keys ({COLUMNS}) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (access_key_id) DO NOTHING"
            ),
            &[
                &key.access_key_id.as_str(),
                &key.client_id.as_str(),
                &key.sealed_secret,
                &key.created_at,
            ],
        )
        .await
        .map_err(|error| {
            if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                StoreError::ClientNotFound(key.client_id.to_string())
            } else {
                pg("create AWS key")(error)
            }
        })?;
    if inserted == 0 {
        return Err(StoreError::AwsKeyExists(key.access_key_id.to_string()));
    }
    Ok(())
}

/// One key.
pub async fn get(tx: &Transaction<'_>, id: &AccessKeyId) -> StoreResult<Option<AwsKeyRecord>> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM aws_keys WHERE access_key_id = $1"),
            &[&id.as_str()],
        )
        .await
        .map_err(pg("read AWS key"))?;
    Ok(row.as_ref().map(record_from_row).transpose()?.flatten())
}

/// The keys of a client, oldest first.
pub async fn list(tx: &Transaction<'_>, client: &ClientId) -> StoreResult<Vec<AwsKeyRecord>> {
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM aws_keys WHERE client_id = $1
                 ORDER BY created_at, access_key_id COLLATE \"C\""
            ),
            &[&client.as_str()],
        )
        .await
        .map_err(pg("list AWS keys"))?;
    rows.iter()
        .filter_map(|row| record_from_row(row).transpose())
        .collect()
}

/// Deletes key `id` of `client` and tells every node to forget what it cached of
/// the client; `AwsKeyNotFound` when that client has no such key.
pub async fn delete(tx: &Transaction<'_>, client: &ClientId, id: &AccessKeyId) -> StoreResult<()> {
    let deleted = tx
        .execute(
            "DELETE FROM aws_keys WHERE access_key_id = $1 AND client_id = $2",
            &[&id.as_str(), &client.as_str()],
        )
        .await
        .map_err(pg("delete AWS key"))?;
    if deleted == 0 {
        return Err(StoreError::AwsKeyNotFound(id.to_string()));
    }
    announce_revocation(tx, client).await
}
