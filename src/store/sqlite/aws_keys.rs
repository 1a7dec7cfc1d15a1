//! AWS access key rows: id, client, sealed secret. A client's rows go with it
//! (`clients::delete`).

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{AccessKeyId, AwsKeyRecord, ClientId};
use crate::domain::{StoreError, StoreResult};

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

const COLUMNS: &str = "access_key_id, client_id, sealed_secret, created_at";

/// A key from a row of [`COLUMNS`]; `None` for an id this binary does not accept
/// (edited by hand), as for clients.
fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<AwsKeyRecord>> {
    let id: String = row.get(0)?;
    let client: String = row.get(1)?;
    let (Ok(access_key_id), Ok(client_id)) = (AccessKeyId::parse(&id), ClientId::parse(&client))
    else {
        return Ok(None);
    };
    Ok(Some(AwsKeyRecord {
        access_key_id,
        client_id,
        sealed_secret: row.get(2)?,
        created_at: row.get(3)?,
    }))
}

/// Inserts a key of an existing client: on the writer's connection, so no deletion
/// of the client can come between the check and the insert.
pub fn create(conn: &Connection, key: &AwsKeyRecord) -> StoreResult<()> {
    let client_exists = conn
        .prepare_cached("SELECT 1 FROM clients WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists([key.client_id.as_str()]))
        .map_err(sql("read client"))?;
    if !client_exists {
        return Err(StoreError::ClientNotFound(key.client_id.to_string()));
    }
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO aws_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (access_key_id) DO NOTHING"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                key.access_key_id.as_str(),
                key.client_id.as_str(),
                key.sealed_secret,
                key.created_at
            ])
        })
        .map_err(sql("create AWS key"))?;
    if inserted == 0 {
        return Err(StoreError::AwsKeyExists(key.access_key_id.to_string()));
    }
    Ok(())
}

/// One key.
pub fn get(conn: &Connection, id: &AccessKeyId) -> StoreResult<Option<AwsKeyRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM aws_keys WHERE access_key_id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([id.as_str()], record_from_row).optional())
    .map(Option::flatten)
    .map_err(sql("read AWS key"))
}

/// The keys of a client, oldest first.
pub fn list(conn: &Connection, client: &ClientId) -> StoreResult<Vec<AwsKeyRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM aws_keys WHERE client_id = ?1 ORDER BY created_at, access_key_id"
    ))
    .and_then(|mut stmt| {
        stmt.query_map([client.as_str()], record_from_row)?
            .filter_map(Result::transpose)
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(sql("list AWS keys"))
}

/// Deletes key `id` of `client`; `AwsKeyNotFound` when that client has no such key.
pub fn delete(conn: &Connection, client: &ClientId, id: &AccessKeyId) -> StoreResult<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM aws_keys WHERE access_key_id = ?1 AND client_id = ?2")
        .and_then(|mut stmt| stmt.execute([id.as_str(), client.as_str()]))
        .map_err(sql("delete AWS key"))?;
    if deleted == 0 {
        return Err(StoreError::AwsKeyNotFound(id.to_string()));
    }
    Ok(())
}

/// Deletes every key of `client`, in the transaction that deletes the client.
pub fn delete_all_of(conn: &Connection, client: &ClientId) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM aws_keys WHERE client_id = ?1")
        .and_then(|mut stmt| stmt.execute([client.as_str()]))
        .map_err(sql("delete the client's AWS keys"))?;
    Ok(())
}
