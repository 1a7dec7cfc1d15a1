//! Client rows on PostgreSQL: id, secret hash and grants (one per line).

use deadpool_postgres::Transaction;

use super::{column, pg};
use crate::domain::{ClientId, Grant};
use crate::domain::{ClientRecord, StoreError, StoreResult};

/// A client from a row `(id, secret_hash, grants, created_at)`; `None` for an id this
/// binary does not accept.
fn record_from_row(row: &tokio_postgres::Row) -> StoreResult<Option<ClientRecord>> {
    let read = "read client";
    // An id or grant that does not parse (edited by hand) is skipped, not fatal; a
    // column of another type than the schema's is an error.
    let Ok(id) = ClientId::parse(column(row, 0, read)?) else {
        return Ok(None);
    };
    let grants = column::<&str>(row, 2, read)?
        .lines()
        .filter_map(|g| g.parse::<Grant>().ok())
        .collect();
    Ok(Some(ClientRecord {
        id,
        secret_hash: column(row, 1, read)?,
        grants,
        created_at: column(row, 3, read)?,
    }))
}

/// Inserts a client; `ClientExists` when the id is taken.
pub async fn create(tx: &Transaction<'_>, client: &ClientRecord) -> StoreResult<()> {
    let grants: Vec<String> = client.grants.iter().map(Grant::to_string).collect();
    let inserted = tx
        .execute(
            "INSERT INTO clients (id, secret_hash, grants, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[
                &client.id.as_str(),
                &client.secret_hash,
                &grants.join("\n"),
                &client.created_at,
            ],
        )
        .await
        .map_err(pg("create client"))?;
    if inserted == 0 {
        return Err(StoreError::ClientExists(client.id.to_string()));
    }
    Ok(())
}

/// Every client, by id.
pub async fn list(tx: &Transaction<'_>) -> StoreResult<Vec<ClientRecord>> {
    let rows = tx
        .query(
            "SELECT id, secret_hash, grants, created_at FROM clients ORDER BY id COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg("list clients"))?;
    rows.iter()
        .filter_map(|row| record_from_row(row).transpose())
        .collect()
}

/// One client.
pub async fn get(tx: &Transaction<'_>, id: &ClientId) -> StoreResult<Option<ClientRecord>> {
    let row = tx
        .query_opt(
            "SELECT id, secret_hash, grants, created_at FROM clients WHERE id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(pg("read client"))?;
    Ok(row.as_ref().map(record_from_row).transpose()?.flatten())
}

/// Deletes a client (its AWS keys go by the foreign key); `ClientNotFound` when there is none.
pub async fn delete(tx: &Transaction<'_>, id: &ClientId) -> StoreResult<()> {
    let deleted = tx
        .execute("DELETE FROM clients WHERE id = $1", &[&id.as_str()])
        .await
        .map_err(pg("delete client"))?;
    if deleted == 0 {
        return Err(StoreError::ClientNotFound(id.to_string()));
    }
    announce_revocation(tx, id).await
}

/// Replaces a client's grants; `ClientNotFound` when there is none.
pub async fn set_grants(tx: &Transaction<'_>, id: &ClientId, grants: &[Grant]) -> StoreResult<()> {
    let grants: Vec<String> = grants.iter().map(Grant::to_string).collect();
    let updated = tx
        .execute(
            "UPDATE clients SET grants = $2 WHERE id = $1",
            &[&id.as_str(), &grants.join("\n")],
        )
        .await
        .map_err(pg("set client grants"))?;
    if updated == 0 {
        return Err(StoreError::ClientNotFound(id.to_string()));
    }
    announce_revocation(tx, id).await
}

/// Replaces a client's secret hash; `ClientNotFound` when there is none.
pub async fn set_secret(tx: &Transaction<'_>, id: &ClientId, secret_hash: &str) -> StoreResult<()> {
    let updated = tx
        .execute(
            "UPDATE clients SET secret_hash = $2 WHERE id = $1",
            &[&id.as_str(), &secret_hash],
        )
        .await
        .map_err(pg("set client secret"))?;
    if updated == 0 {
        return Err(StoreError::ClientNotFound(id.to_string()));
    }
    announce_revocation(tx, id).await
}

/// Tells every node, at commit, to forget what it cached of the client `id`.
pub(super) async fn announce_revocation(tx: &Transaction<'_>, id: &ClientId) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::REVOKE_CHANNEL, &id.as_str()],
    )
    .await
    .map_err(pg("notify client revocation"))?;
    Ok(())
}

/// The signing key named `name`, stored as `candidate` if there is none yet.
pub async fn signing_key(
    tx: &Transaction<'_>,
    name: &str,
    candidate: &[u8],
) -> StoreResult<Vec<u8>> {
    tx.execute(
        "INSERT INTO signing_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &candidate],
    )
    .await
    .map_err(pg("store signing key"))?;
    let row = tx
        .query_one("SELECT key FROM signing_keys WHERE name = $1", &[&name])
        .await
        .map_err(pg("read signing key"))?;
    column(&row, 0, "read signing key")
}
