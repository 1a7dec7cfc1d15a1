//! Records and cursors (see [`crate::domain::RecordStore`]): two plain tables, the
//! domain's JSON kept as text.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{RecordKind, StoreError, StoreResult};

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

/// Stores a record; `true` when it is new.
pub fn put(conn: &Connection, kind: RecordKind, name: &str, body: &str) -> StoreResult<bool> {
    let existed = get(conn, kind, name)?.is_some();
    conn.prepare_cached(
        "INSERT INTO records (kind, name, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
    )
    .and_then(|mut stmt| stmt.execute(params![kind.as_str(), name, body]))
    .map_err(sql("store a record"))?;
    Ok(!existed)
}

/// One record.
pub fn get(conn: &Connection, kind: RecordKind, name: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT body FROM records WHERE kind = ?1 AND name = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![kind.as_str(), name], |row| row.get(0))
                .optional()
        })
        .map_err(sql("read a record"))
}

/// Every record of a kind, by name.
pub fn list(conn: &Connection, kind: RecordKind) -> StoreResult<Vec<(String, String)>> {
    conn.prepare_cached("SELECT name, body FROM records WHERE kind = ?1 ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([kind.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list records"))
}

/// Deletes a record with its cursor; `false` when there was no record.
pub fn delete(conn: &Connection, kind: RecordKind, name: &str) -> StoreResult<bool> {
    conn.prepare_cached("DELETE FROM cursors WHERE kind = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.execute(params![kind.as_str(), name]))
        .map_err(sql("delete a cursor"))?;
    let deleted = conn
        .prepare_cached("DELETE FROM records WHERE kind = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.execute(params![kind.as_str(), name]))
        .map_err(sql("delete a record"))?;
    Ok(deleted > 0)
}

/// One cursor.
pub fn cursor(conn: &Connection, kind: RecordKind, name: &str) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT value FROM cursors WHERE kind = ?1 AND name = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![kind.as_str(), name], |row| row.get(0))
                .optional()
        })
        .map_err(sql("read a cursor"))
}

/// Moves a cursor from `expected` to `new`; `false` when it was not at `expected`.
/// Atomic because the one writer runs it inside its transaction.
pub fn swap(
    conn: &Connection,
    kind: RecordKind,
    name: &str,
    expected: Option<i64>,
    new: i64,
) -> StoreResult<bool> {
    if cursor(conn, kind, name)? != expected {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO cursors (kind, name, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut stmt| stmt.execute(params![kind.as_str(), name, new]))
    .map_err(sql("move a cursor"))?;
    Ok(true)
}
