//! The one lock policy. A std lock is poisoned when a thread panicked while holding it. The
//! gateway's critical sections do nothing that can panic (no `unwrap`, no indexing, no calls
//! out), so the data behind a poisoned lock is as last written, and every user reads it through
//! these functions, which take the guard either way.
//!
//! The policy is fail closed: a poisoned lock never turns into "nothing there" — no empty block
//! list, no missing token, no skipped update — so no check passes because of one. (The
//! alternative, defaulting, is what let a poisoned block list read as "not blocked".)

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_poisoned_lock_still_reads_what_was_written() {
        let blocked = std::sync::Arc::new(RwLock::new(HashSet::from(["mallory"])));
        let b = blocked.clone();
        let _ = std::thread::spawn(move || {
            let _guard = b.write().expect("not poisoned yet");
            panic!("a panic while holding the lock poisons it");
        })
        .join();
        assert!(blocked.is_poisoned());
        assert!(read(&blocked).contains("mallory"), "still blocked");
        write(&blocked).insert("eve");
        assert_eq!(read(&blocked).len(), 2);
        let m = Mutex::new(1);
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
