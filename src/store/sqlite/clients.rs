//! Client rows: id, secret hash and grants (stored as their text form, one per line).

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{ClientId, Grant};
use crate::domain::{ClientRecord, StoreError, StoreResult};

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<ClientRecord>> {
    let id: String = row.get(0)?;
    let grants: String = row.get(2)?;
    // A row this binary cannot read (edited by hand) is skipped, not fatal.
    let Ok(id) = ClientId::parse(&id) else {
        return Ok(None);
    };
    let grants = grants
        .lines()
        .filter_map(|g| g.parse::<Grant>().ok())
        .collect();
    Ok(Some(ClientRecord {
        id,
        secret_hash: row.get(1)?,
        grants,
        created_at: row.get(3)?,
    }))
}

/// Inserts a client; `ClientExists` when the id is taken.
pub fn create(conn: &Connection, client: &ClientRecord) -> StoreResult<()> {
    let grants: Vec<String> = client.grants.iter().map(Grant::to_string).collect();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO clients (id, secret_hash, grants, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                client.id.as_str(),
                client.secret_hash,
                grants.join("\n"),
                client.created_at
            ])
        })
        .map_err(sql("create client"))?;
    if inserted == 0 {
        return Err(StoreError::ClientExists(client.id.to_string()));
    }
    Ok(())
}

/// Every client, by id.
pub fn list(conn: &Connection) -> StoreResult<Vec<ClientRecord>> {
    conn.prepare_cached("SELECT id, secret_hash, grants, created_at FROM clients ORDER BY id")
        .and_then(|mut stmt| {
            stmt.query_map([], record_from_row)?
                .filter_map(Result::transpose)
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list clients"))
}

/// One client.
pub fn get(conn: &Connection, id: &ClientId) -> StoreResult<Option<ClientRecord>> {
    conn.prepare_cached("SELECT id, secret_hash, grants, created_at FROM clients WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id.as_str()], record_from_row).optional())
        .map(Option::flatten)
        .map_err(sql("read client"))
}

/// Deletes a client with its AWS keys; `ClientNotFound` when there is none.
pub fn delete(conn: &Connection, id: &ClientId) -> StoreResult<()> {
    super::aws_keys::delete_all_of(conn, id)?;
    let deleted = conn
        .prepare_cached("DELETE FROM clients WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute([id.as_str()]))
        .map_err(sql("delete client"))?;
    if deleted == 0 {
        return Err(StoreError::ClientNotFound(id.to_string()));
    }
    Ok(())
}

/// Replaces a client's grants; `ClientNotFound` when there is none.
pub fn set_grants(conn: &Connection, id: &ClientId, grants: &[Grant]) -> StoreResult<()> {
    let grants: Vec<String> = grants.iter().map(Grant::to_string).collect();
    let updated = conn
        .prepare_cached("UPDATE clients SET grants = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![id.as_str(), grants.join("\n")]))
        .map_err(sql("set client grants"))?;
    if updated == 0 {
        return Err(StoreError::ClientNotFound(id.to_string()));
    }
    Ok(())
}

/// Replaces a client's secret hash; `ClientNotFound` when there is none.
pub fn set_secret(conn: &Connection, id: &ClientId, secret_hash: &str) -> StoreResult<()> {
    let updated = conn
        .prepare_cached("UPDATE clients SET secret_hash = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![id.as_str(), secret_hash]))
        .map_err(sql("set client secret"))?;
    if updated == 0 {
        return Err(StoreError::ClientNotFound(id.to_string()));
    }
    Ok(())
}

/// The signing key named `name`, stored as `candidate` if there is none yet.
pub fn signing_key(conn: &Connection, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
    conn.prepare_cached(
        "INSERT INTO signing_keys (name, key) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )
    .and_then(|mut stmt| stmt.execute(params![name, candidate]))
    .map_err(sql("store signing key"))?;
    conn.prepare_cached("SELECT key FROM signing_keys WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)))
        .map_err(sql("read signing key"))
}
