//! Poison-tolerant locking. A thread that panics while holding a lock poisons it; the data
//! vpcrouter and its plugins guard (counters, snapshots, caches, buckets, a log file) stays
//! usable, so their locks are taken through these helpers instead of failing for good.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, also when a panicking thread poisoned it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `l`, also when a panicking thread poisoned it.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `l`, also when a panicking thread poisoned it.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let (m, l) = (Mutex::new(1), RwLock::new(1));
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let (_m, _l) = (m.lock().unwrap(), l.write().unwrap());
                panic!("poisons both");
            })
            .join()
        });
        assert!(m.is_poisoned() && l.is_poisoned());
        *lock(&m) += 1;
        *write(&l) += 1;
        assert_eq!((*lock(&m), *read(&l)), (2, 2));
    }
}
