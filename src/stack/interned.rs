//! Values stored once and shared by id, counted by their holders: the flight recorders keep
//! each distinct stack (and thread name) once however many slices of history hold it, and
//! free it with the last one.

use std::collections::HashMap;
use std::hash::Hash;

/// At most `cap` distinct values, each with the number of holders.
#[derive(Debug)]
pub(crate) struct Interned<K> {
    ids: HashMap<K, u32>,
    slots: Vec<Option<(K, u32)>>,
    free: Vec<u32>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Interned<K> {
    /// An empty table holding at most `cap` distinct values.
    pub(crate) fn new(cap: usize) -> Interned<K> {
        Interned {
            ids: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            cap,
        }
    }

    /// The id of `value`, with one more holder; `None` when the table holds `cap` others.
    pub(crate) fn insert(&mut self, value: K) -> Option<u32> {
        if let Some(&id) = self.ids.get(&value) {
            if let Some((_, holders)) = &mut self.slots[id as usize] {
                *holders += 1;
            }
            return Some(id);
        }
        if self.ids.len() >= self.cap {
            return None;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some((value.clone(), 1));
                id
            }
            None => {
                self.slots.push(Some((value.clone(), 1)));
                u32::try_from(self.slots.len() - 1).ok()?
            }
        };
        self.ids.insert(value, id);
        Some(id)
    }

    /// One holder fewer for `id`; the value goes with its last holder (its id is reused).
    pub(crate) fn release(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        if let Some((value, holders)) = slot {
            *holders -= 1;
            if *holders == 0 {
                self.ids.remove(value);
                *slot = None;
                self.free.push(id);
            }
        }
    }

    /// The value of `id`, while it has holders.
    pub(crate) fn get(&self, id: u32) -> Option<&K> {
        self.slots.get(id as usize)?.as_ref().map(|(v, _)| v)
    }

    /// Distinct values held.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The values held.
    pub(crate) fn values(&self) -> impl Iterator<Item = &K> {
        self.ids.keys()
    }

    /// Bytes of the table itself (not of what the values point to), roughly.
    pub(crate) fn table_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<(K, u32)>>()
            + self.ids.capacity() * (std::mem::size_of::<K>() + 4)
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_once_freed_with_their_last_holder_and_bounded() {
        let mut t: Interned<&str> = Interned::new(2);
        let a = t.insert("a").unwrap();
        assert_eq!(t.insert("a"), Some(a), "the same value, the same id");
        let b = t.insert("b").unwrap();
        assert_eq!(t.insert("c"), None, "the cap holds");
        t.release(a);
        assert_eq!(t.get(a), Some(&"a"), "one holder left");
        t.release(a);
        assert_eq!((t.get(a), t.len()), (None, 1));
        let c = t.insert("c").unwrap();
        assert_eq!(c, a, "a freed id is reused");
        assert_eq!(t.values().count(), 2);
        assert_eq!(t.get(b), Some(&"b"));
    }
}
