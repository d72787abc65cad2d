//! Values that many loaded policies carry alike (templates, label sets), kept once.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

/// Values of loaded policies by their hash, each shared by every policy that carries an
/// equal one while any of them is loaded. Only the hash is kept as the key, so a value
/// no other policy shares costs no second copy.
pub(in crate::policy) struct SharedValues<T> {
    known: LazyLock<Mutex<HashMap<u64, Weak<T>>>>,
}

impl<T> SharedValues<T> {
    /// An empty set, for a `static`.
    pub(in crate::policy) const fn new() -> Self {
        Self {
            known: LazyLock::new(Mutex::default),
        }
    }

    /// The loaded value that `same` finds equal to `input` (compared among those with
    /// `input`'s hash), else `make(input)`, kept for later callers unless another value
    /// with the same hash is loaded (that one keeps its place; the new one is simply
    /// not shared). An error from `make` keeps nothing.
    pub(in crate::policy) fn share<I: Hash, E>(
        &self,
        input: I,
        same: impl FnOnce(&T, &I) -> bool,
        make: impl FnOnce(I) -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let mut h = DefaultHasher::new();
        input.hash(&mut h);
        let key = h.finish();
        // A poisoned lock still holds whole entries: each is inserted in one step.
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded = known.get(&key).and_then(Weak::upgrade);
        if let Some(value) = &loaded
            && same(value, &input)
        {
            return Ok(Arc::clone(value));
        }
        let value = Arc::new(make(input)?);
        if loaded.is_none() {
            if known.len() >= 1024 && known.len().is_power_of_two() {
                // Values no loaded policy carries any more.
                known.retain(|_, v| v.strong_count() > 0);
            }
            known.insert(key, Arc::downgrade(&value));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_kept_once_and_errors_keep_nothing() {
        let values: SharedValues<String> = SharedValues::new();
        let make = |s: &str| Ok::<_, ()>(s.to_owned());
        let a = values.share("x", |v, s| v == s, make).unwrap();
        let b = values.share("x", |v, s| v == s, make).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A value that `same` refuses is made anew and not kept in the place of `a`.
        let c = values.share("x", |_, _| false, make).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(
            &a,
            &values.share("x", |v, s| v == s, make).unwrap()
        ));
        assert!(values.share("y", |v, s| v == s, |_| Err(())).is_err());
        drop((a, b, c));
        let fresh = values.share("x", |v, s| v == s, make).unwrap();
        assert_eq!(*fresh, "x");
    }
}
