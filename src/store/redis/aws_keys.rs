//! AWS access keys on Redis: one hash of every key (access key id → stored form)
//! and, per client, the set of its key ids. Both share the cluster slot of the
//! clients hash (`Keys::aws_tag`), so creating a key, deleting one and deleting a
//! client with its keys are each one script, atomic on a cluster too.

use async_trait::async_trait;
use base64::Engine;
use redis::Script;

use super::{redis_error, Core, Keys, RedisStore};
use crate::domain::{AccessKeyId, AwsKeyRecord, AwsKeyStore, ClientId};
use crate::domain::{StoreError, StoreResult};

static CREATE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("lua/aws_key_create.lua")));
static DELETE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("lua/aws_key_delete.lua")));
static DELETE_CLIENT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("lua/client_delete.lua")));

impl Keys {
    /// The hash tag of the AWS keys: the whole name of the clients hash (which has
    /// no braces, so Redis hashes all of it), so the AWS keys' hash, each client's
    /// set and the clients hash land in one cluster slot, as one script needs.
    fn aws_tag(&self) -> String {
        format!("{{{}}}", self.clients())
    }

    /// Access key id → [`encode`]d key, for every AWS key.
    fn aws_keys(&self) -> String {
        format!("{}:aws-keys", self.aws_tag())
    }

    /// The access key ids of `client`.
    fn aws_keys_of(&self, client: &ClientId) -> String {
        format!("{}:aws-keys-of:{client}", self.aws_tag())
    }
}

/// A key as stored in the hash: client id, creation time, then the sealed secret in base64.
fn encode(key: &AwsKeyRecord) -> String {
    format!(
        "{}\n{}\n{}",
        key.client_id,
        key.created_at,
        base64::engine::general_purpose::STANDARD.encode(&key.sealed_secret)
    )
}

/// A key from its stored form; `None` when it cannot be read (edited by hand), as on SQL.
fn decode(id: &str, text: &str) -> Option<AwsKeyRecord> {
    let mut lines = text.lines();
    let client_id = ClientId::parse(lines.next()?).ok()?;
    let created_at = lines.next()?.parse().ok()?;
    let sealed_secret = base64::engine::general_purpose::STANDARD
        .decode(lines.next()?)
        .ok()?;
    Some(AwsKeyRecord {
        access_key_id: AccessKeyId::parse(id).ok()?,
        client_id,
        sealed_secret,
        created_at,
    })
}

impl Core {
    /// Runs a script that writes, waiting for `wait_replicas`; answers its return code.
    async fn write_script(
        &self,
        context: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> StoreResult<i64> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection()?;
        let code: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error(context, true))?;
        self.replicated(&mut connection, keys[0].as_bytes()).await?;
        Ok(code)
    }

    /// Deletes a client with its AWS keys (see `lua/client_delete.lua`); `false` when
    /// there was no such client.
    pub(super) async fn delete_client_and_keys(&self, id: &ClientId) -> StoreResult<bool> {
        let (clients, all, of_client) = (
            self.keys.clients(),
            self.keys.aws_keys(),
            self.keys.aws_keys_of(id),
        );
        let deleted = self
            .write_script(
                "delete client",
                &DELETE_CLIENT,
                &[&clients, &all, &of_client],
                &[id.as_str()],
            )
            .await?;
        Ok(deleted == 1)
    }
}

#[async_trait]
impl AwsKeyStore for RedisStore {
    async fn create_aws_key(&self, key: &AwsKeyRecord) -> StoreResult<()> {
        let (clients, all, of_client) = (
            self.keys.clients(),
            self.keys.aws_keys(),
            self.keys.aws_keys_of(&key.client_id),
        );
        let created = self
            .write_script(
                "create AWS key",
                &CREATE,
                &[&clients, &all, &of_client],
                &[
                    key.client_id.as_str(),
                    key.access_key_id.as_str(),
                    &encode(key),
                ],
            )
            .await?;
        match created {
            1 => Ok(()),
            0 => Err(StoreError::ClientNotFound(key.client_id.to_string())),
            _ => Err(StoreError::AwsKeyExists(key.access_key_id.to_string())),
        }
    }

    async fn aws_key(&self, id: &AccessKeyId) -> StoreResult<Option<AwsKeyRecord>> {
        let text: Option<String> = self
            .command(
                "read AWS key",
                false,
                redis::cmd("HGET")
                    .arg(self.keys.aws_keys())
                    .arg(id.as_str()),
            )
            .await?;
        Ok(text.and_then(|text| decode(id.as_str(), &text)))
    }

    async fn list_aws_keys(&self, client: &ClientId) -> StoreResult<Vec<AwsKeyRecord>> {
        let ids: Vec<String> = self
            .command(
                "list AWS keys",
                false,
                redis::cmd("SMEMBERS").arg(self.keys.aws_keys_of(client)),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<Option<String>> = self
            .command(
                "list AWS keys",
                false,
                redis::cmd("HMGET").arg(self.keys.aws_keys()).arg(&ids),
            )
            .await?;
        // A key deleted between the two reads is simply not listed.
        let mut keys: Vec<AwsKeyRecord> = ids
            .iter()
            .zip(texts)
            .filter_map(|(id, text)| decode(id, &text?))
            .filter(|key| &key.client_id == client)
            .collect();
        keys.sort_by(|a, b| {
            (a.created_at, a.access_key_id.as_str()).cmp(&(b.created_at, b.access_key_id.as_str()))
        });
        Ok(keys)
    }

    async fn delete_aws_key(&self, client: &ClientId, id: &AccessKeyId) -> StoreResult<()> {
        let (all, of_client) = (self.keys.aws_keys(), self.keys.aws_keys_of(client));
        let deleted = self
            .write_script(
                "delete AWS key",
                &DELETE,
                &[&all, &of_client],
                &[id.as_str()],
            )
            .await?;
        if deleted == 0 {
            return Err(StoreError::AwsKeyNotFound(id.to_string()));
        }
        self.revoke(client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_stored_form_and_share_the_clients_slot() {
        let key = AwsKeyRecord {
            access_key_id: AccessKeyId::parse("HOPRABCDEFGHIJ234567").unwrap(),
            client_id: ClientId::parse("worker").unwrap(),
            sealed_secret: vec![0, 10, 255, b'\n'],
            created_at: 42,
        };
        let back = decode("HOPRABCDEFGHIJ234567", &encode(&key)).unwrap();
        assert_eq!(back.client_id, key.client_id);
        assert_eq!(back.sealed_secret, key.sealed_secret);
        assert_eq!(back.created_at, 42);
        assert!(decode("HOPRABCDEFGHIJ234567", "worker\n42").is_none());

        let keys = Keys {
            prefix: "t1:".into(),
        };
        let slot = |name: &str| redis::cluster_routing::Slot::for_key(name);
        assert_eq!(slot(&keys.aws_keys()), slot(&keys.clients()));
        assert_eq!(
            slot(&keys.aws_keys_of(&key.client_id)),
            slot(&keys.clients())
        );
    }
}
