//! The audit log on the embedded engine: its own tree ([`AUDIT_TREE`](super::AUDIT_TREE)),
//! keyed by the entry id's ULID (time order), the entry as JSON.

use super::kv::Batch;
use super::writer::{Done, Writer};
use super::{EmbeddedStore, LIST_SCAN_LIMIT};
use crate::store::audit::{parse_audit_id, AuditEntry, AuditFilter};
use crate::store::{delivery_id_at, Portable, StoreError};

type Id = u128;

fn audit_key(id: Id) -> [u8; 16] {
    id.to_be_bytes()
}

impl EmbeddedStore {
    /// Every audit entry, oldest first, for an export.
    pub(super) fn export_audit(&self, out: &mut Vec<Portable>) -> Result<(), StoreError> {
        for entry in self.audit.scan_prefix(b"") {
            let (k, v) = entry?;
            match serde_json::from_slice::<AuditEntry>(&v) {
                Ok(e) => out.push(Portable::Audit(e)),
                Err(e) => self.skipped.skip(&k, e),
            }
        }
        Ok(())
    }

    /// The writes of imported audit entries (their ids checked by the import's decoding).
    pub(super) fn audit_batch(entries: Vec<AuditEntry>) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        for e in entries {
            let id = parse_audit_id(&e.id)
                .ok_or_else(|| StoreError::Backend(format!("import: bad audit id {:?}", e.id)))?;
            let value = serde_json::to_vec(&e)
                .map_err(|err| StoreError::Backend(format!("audit entry: {err}")))?;
            batch.insert(audit_key(id.0), value);
        }
        Ok(batch)
    }

    pub(super) async fn audit_record(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let id = parse_audit_id(&entry.id).ok_or_else(|| {
            StoreError::Backend(format!("audit id {:?} is not aud_<ULID>", entry.id))
        })?;
        let value = serde_json::to_vec(&entry)
            .map_err(|e| StoreError::Backend(format!("audit entry: {e}")))?;
        let audit = self.audit.clone();
        self.write(move |_: &Writer| {
            audit.insert(audit_key(id.0), value)?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    pub(super) async fn audit_page(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        let low = delivery_id_at(filter.since_ms.unwrap_or(0)).0;
        let mut high = filter.until_ms.map_or(Id::MAX, |t| delivery_id_at(t).0);
        if let Some(cursor) = cursor {
            match parse_audit_id(cursor) {
                Some(c) => high = high.min(c.0),
                None => return Ok((Vec::new(), None)),
            }
        }
        if low >= high {
            return Ok((Vec::new(), None));
        }
        let filter = filter.clone();
        self.read(move |s| {
            let mut page = Vec::new();
            let mut examined = 0;
            let range = s.audit.range(audit_key(low)..audit_key(high));
            for entry in range.rev() {
                let (k, v) = entry?;
                examined += 1;
                match serde_json::from_slice::<AuditEntry>(&v) {
                    Ok(e) if filter.matches(&e) => {
                        if page.len() == limit {
                            let next = page.last().map(|e: &AuditEntry| e.id.clone());
                            return Ok((page, next));
                        }
                        page.push(e);
                    }
                    Ok(_) => {}
                    Err(e) => s.skipped.skip(&k, e),
                }
                if examined >= LIST_SCAN_LIMIT {
                    // A short page: the next one starts below the last key examined.
                    let next = <[u8; 16]>::try_from(k.as_ref())
                        .ok()
                        .map(|b| format!("aud_{}", ulid::Ulid(u128::from_be_bytes(b))));
                    return Ok((page, next));
                }
            }
            Ok((page, None))
        })
        .await
    }

    pub(super) async fn audit_erase_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let audit = self.audit.clone();
        let (owner, actor) = (owner.to_string(), format!("portal:{owner}"));
        self.write(move |_: &Writer| {
            let mut batch = Batch::default();
            let mut n = 0;
            for entry in audit.scan_prefix(b"") {
                let (k, v) = entry?;
                // An entry that cannot be read may name the owner: it goes too.
                let about = serde_json::from_slice::<AuditEntry>(&v).map_or(true, |e| {
                    e.owner.as_deref() == Some(&owner) || e.actor == actor
                });
                if about {
                    batch.remove(k.to_vec());
                    n += 1;
                }
            }
            audit.apply_batch(batch)?;
            Ok::<_, StoreError>((n, None::<Done>))
        })
        .await
    }

    pub(super) async fn audit_prune(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let audit = self.audit.clone();
        let high = delivery_id_at(cutoff_ms).0;
        self.write(move |_: &Writer| {
            let mut batch = Batch::default();
            let mut n = 0;
            for k in audit
                .range(audit_key(0)..audit_key(high))
                .keys()
                .take(limit)
            {
                batch.remove(k?.to_vec());
                n += 1;
            }
            audit.apply_batch(batch)?;
            Ok::<_, StoreError>((n, None::<Done>))
        })
        .await
    }
}
