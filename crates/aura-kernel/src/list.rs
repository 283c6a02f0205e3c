//! An append-only list whose copies share their elements, for what grows with a mission's
//! history (its conversation, its completed calls).
//!
//! Every event applies to a copy of the mission (so that a refused event leaves it as it
//! was), and the engine hands copies around; with plain vectors each copy cost O(history),
//! which made a long mission's step slower with every step. Here a copy costs O(1): the
//! elements live in shared chunks of [`CHUNK`] elements, and a push copies at most the
//! last, partial chunk's pointers (and, once per [`CHUNK`] pushes, the list of chunks).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Elements per shared chunk: small enough that copying a partial chunk's pointers on a
/// push is cheap, large enough that the list of chunks stays short.
const CHUNK: usize = 32;

/// An append-only list that clones in O(1). Elements are read through [`AppendList::iter`]
/// and friends; they change only by [`AppendList::push`] and, rarely,
/// [`AppendList::update`] (a completed call marked undone), which copies one chunk.
pub struct AppendList<T> {
    /// Full chunks, `CHUNK` elements each.
    full: Arc<Vec<Arc<Vec<Arc<T>>>>>,
    /// The last chunk, with fewer than `CHUNK` elements.
    tail: Arc<Vec<Arc<T>>>,
}

impl<T> AppendList<T> {
    pub fn new() -> Self {
        AppendList {
            full: Arc::new(Vec::new()),
            tail: Arc::new(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.full.len() * CHUNK + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.tail.is_empty()
    }

    /// Appends `item`, leaving every copy of the list as it was.
    pub fn push(&mut self, item: T) {
        let tail = Arc::make_mut(&mut self.tail);
        tail.push(Arc::new(item));
        if tail.len() == CHUNK {
            let chunk = std::mem::take(tail);
            Arc::make_mut(&mut self.full).push(Arc::new(chunk));
        }
    }

    /// The elements in order; reversible, so the latest can be read first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.full
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(self.tail.iter())
            .map(|item| &**item)
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        let (chunk, at) = (index / CHUNK, index % CHUNK);
        match self.full.get(chunk) {
            Some(c) => c.get(at).map(|item| &**item),
            None if chunk == self.full.len() => self.tail.get(at).map(|item| &**item),
            None => None,
        }
    }

    pub fn last(&self) -> Option<&T> {
        match self.tail.last() {
            Some(item) => Some(&**item),
            None => self.full.last().and_then(|c| c.last()).map(|item| &**item),
        }
    }

    /// Where the latest element that satisfies `f` is.
    pub fn rposition(&self, f: impl FnMut(&T) -> bool) -> Option<usize> {
        let len = self.len();
        self.iter()
            .rev()
            .position(f)
            .map(|from_end| len - 1 - from_end)
    }
}

impl<T: Clone> AppendList<T> {
    /// Changes the element at `index` with `f` (copying the chunk that holds it when
    /// another copy of the list shares it); `None` when there is no such element.
    pub fn update<R>(&mut self, index: usize, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let (chunk, at) = (index / CHUNK, index % CHUNK);
        let slot = if chunk < self.full.len() {
            let full = Arc::make_mut(&mut self.full);
            Arc::make_mut(&mut full[chunk]).get_mut(at)?
        } else if chunk == self.full.len() {
            Arc::make_mut(&mut self.tail).get_mut(at)?
        } else {
            return None;
        };
        Some(f(Arc::make_mut(slot)))
    }
}

impl<T> Clone for AppendList<T> {
    fn clone(&self) -> Self {
        AppendList {
            full: self.full.clone(),
            tail: self.tail.clone(),
        }
    }
}

impl<T> Default for AppendList<T> {
    fn default() -> Self {
        AppendList::new()
    }
}

impl<T> FromIterator<T> for AppendList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut list = AppendList::new();
        for item in items {
            list.push(item);
        }
        list
    }
}

impl<T: PartialEq> PartialEq for AppendList<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for AppendList<T> {}

impl<T: fmt::Debug> fmt::Debug for AppendList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Written as a JSON array, exactly as a `Vec<T>` of the same elements is, so the bytes
/// the state hash covers do not depend on how the list is held.
impl<T: Serialize> Serialize for AppendList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for AppendList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<T>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    /// Every length around the chunk boundaries: the list reads back as the vector it
    /// was built like, in both directions, by index, and as the same JSON.
    #[test]
    fn reads_back_like_a_vector() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let v: Vec<u32> = (0..n as u32).collect();
            let l: AppendList<u32> = v.iter().copied().collect();
            assert_eq!(l.len(), n);
            assert_eq!(l.is_empty(), n == 0);
            assert!(l.iter().copied().eq(v.iter().copied()));
            assert!(l.iter().rev().copied().eq(v.iter().rev().copied()));
            assert_eq!(l.last(), v.last());
            for i in 0..n + 2 {
                assert_eq!(l.get(i), v.get(i), "n {n} index {i}");
            }
            assert_eq!(
                l.rposition(|x| x % 5 == 0),
                v.iter().rposition(|x| x % 5 == 0)
            );
            assert_eq!(
                serde_json::to_string(&l).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
            let back: AppendList<u32> =
                serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back, l);
        }
    }

    /// A copy never sees what is pushed to or changed in another copy afterwards.
    #[test]
    fn copies_are_independent() {
        let mut a: AppendList<String> = (0..CHUNK + 3).map(|i| i.to_string()).collect();
        let b = a.clone();
        a.push("new".into());
        assert_eq!(
            a.update(1, |s| std::mem::replace(s, "changed".into())),
            Some("1".into())
        );
        assert_eq!(a.update(CHUNK + 1, |s| s.push('!')), Some(()));
        assert_eq!(a.update(a.len(), |s| s.push('!')), None);
        assert_eq!(b.len(), CHUNK + 3);
        assert_eq!(b.get(1).map(String::as_str), Some("1"));
        assert_eq!(
            b.get(CHUNK + 1).map(String::as_str),
            Some(&*(CHUNK + 1).to_string())
        );
        assert_eq!(a.get(1).map(String::as_str), Some("changed"));
        assert_eq!(a.get(CHUNK + 1), Some(&format!("{}!", CHUNK + 1)));
        assert_eq!(a.last().map(String::as_str), Some("new"));
        assert_ne!(a, b);
    }
}
