//! The workload: MVCC transactions in TiKV's formats (prewrites that lock, commits that
//! write records or roll back, short and long values), proposed through Raft.

use super::*;

impl Cluster {
    /// One workload step: a prewrite (a lock), a commit of an earlier prewrite (the lock
    /// goes, a write record and maybe a default-CF value come), or a rollback.
    pub(super) fn workload(&mut self) -> Result<()> {
        if !self.pending.is_empty() && self.rng.chance(60) {
            let i = self.rng.below(self.pending.len() as u64) as usize;
            let mut txn = self.pending.swap_remove(i);
            // The key's region now (a split or a merge may have moved it); none while it
            // merges: the commit waits.
            let Some(region) = self.region_of(&txn.key) else {
                self.pending.push(txn);
                return Ok(());
            };
            txn.region = region;
            let commit_ts = self.next_ts();
            let lock_key = encode_bytes(&txn.key);
            let mut ops = vec![Op {
                cf: Cf::Lock,
                key: lock_key,
                value: None,
            }];
            let rollback = self.rng.chance(10);
            let record = if rollback {
                WriteRecord::new(WriteType::Rollback, txn.start_ts, None)
            } else if txn.value.is_empty() {
                WriteRecord::new(WriteType::Delete, txn.start_ts, None)
            } else if txn.value.len() <= 64 {
                WriteRecord::new(WriteType::Put, txn.start_ts, Some(txn.value.clone()))
            } else {
                let key = MvccKey {
                    user_key: txn.key.clone(),
                    ts: txn.start_ts,
                }
                .encode();
                ops.push(Op {
                    cf: Cf::Default,
                    key,
                    value: Some(txn.value.clone()),
                });
                WriteRecord::new(WriteType::Put, txn.start_ts, None)
            };
            let write_key = MvccKey {
                user_key: txn.key.clone(),
                ts: if rollback { txn.start_ts } else { commit_ts },
            }
            .encode();
            ops.push(Op {
                cf: Cf::Write,
                key: write_key,
                value: Some(record.encode()?),
            });
            if self.propose_write(txn.region, ops)? {
                self.report.commits += 1;
            }
            return Ok(());
        }
        let key = user_key(self.rng.below(KEYS));
        let Some(region) = self.region_of(&key) else {
            return Ok(());
        };
        if self.pending.iter().any(|p| p.key == key) {
            return Ok(());
        }
        let start_ts = self.next_ts();
        let value = match self.rng.below(10) {
            0 => Vec::new(), // a delete
            1 => vec![b'L'; 200],
            _ => format!("v{start_ts}").into_bytes(),
        };
        let kind = if value.is_empty() {
            LockType::Delete
        } else {
            LockType::Put
        };
        let lock = LockRecord::new(kind, key.clone(), start_ts, 3000).encode()?;
        let op = Op {
            cf: Cf::Lock,
            key: encode_bytes(&key),
            value: Some(lock),
        };
        if self.propose_write(region, vec![op])? {
            self.pending.push(Pending {
                region,
                key,
                start_ts,
                value,
            });
            self.report.prewrites += 1;
        }
        Ok(())
    }
}
