//! The embedded ledger store: one redb file, `ledger.redb`, in the data dir.
//!
//! Keys are `(cluster, hour, dimension code, seq)` tuples, so one cluster's hours are one
//! contiguous, ordered range. redb serializes write transactions, which makes "check every key
//! is free, then insert" atomic without further locking. Every call does blocking file I/O (a
//! commit is an fsync) and so runs on `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use super::{check_batch, decode_entry, encode_value, LedgerEntry, LedgerStore, StoreFuture};
use crate::Error;

/// The file name inside the data dir.
pub const FILE_NAME: &str = "ledger.redb";

/// `(cluster, hour, dimension code, seq)` -> compact JSON value (see `StoredValue`).
const ENTRIES: TableDefinition<(u128, i64, u8, u32), &[u8]> = TableDefinition::new("entries");

/// Cheap to clone; clones share the open database.
#[derive(Debug, Clone)]
pub struct RedbLedger {
    db: Arc<Database>,
}

impl RedbLedger {
    /// Opens (creating if needed) `ledger.redb` in `data_dir`. Blocking.
    pub fn open(data_dir: &Path) -> Result<RedbLedger, Error> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let db = Database::create(data_dir.join(FILE_NAME))?;
        // Read transactions cannot open a table that was never created.
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.commit()?;
        Ok(RedbLedger { db: Arc::new(db) })
    }

    fn append_blocking(&self, batch: &[LedgerEntry]) -> Result<(), Error> {
        if check_batch(batch)?.is_none() {
            return Ok(());
        }
        let values = batch
            .iter()
            .map(encode_value)
            .collect::<Result<Vec<_>, _>>()?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            for (entry, value) in batch.iter().zip(&values) {
                let key = stored_key(entry);
                if table.get(key)?.is_some() {
                    // Dropping the uncommitted transaction discards what was inserted so far.
                    return Err(entry.conflict());
                }
                table.insert(key, value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn entries_blocking(
        &self,
        cluster: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<LedgerEntry>, Error> {
        if from_hour >= to_hour {
            return Ok(Vec::new());
        }
        let c = cluster.as_u128();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for item in table.range((c, from_hour, 0u8, 0u32)..(c, to_hour, 0u8, 0u32))? {
            let (key, value) = item?;
            let (_, hour, dimension, seq) = key.value();
            out.push(decode_entry(cluster, hour, dimension, seq, value.value())?);
        }
        Ok(out)
    }
}

fn stored_key(entry: &LedgerEntry) -> (u128, i64, u8, u32) {
    (
        entry.cluster.as_u128(),
        entry.hour,
        entry.dimension.code(),
        entry.seq,
    )
}

impl LedgerStore for RedbLedger {
    fn append(&self, batch: Vec<LedgerEntry>) -> StoreFuture<'_, ()> {
        let this = self.clone();
        Box::pin(
            async move { tokio::task::spawn_blocking(move || this.append_blocking(&batch)).await? },
        )
    }

    fn entries(
        &self,
        cluster: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreFuture<'_, Vec<LedgerEntry>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.entries_blocking(cluster, from_hour, to_hour))
                .await?
        })
    }
}
