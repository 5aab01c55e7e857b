//! A slab of per-socket slots with generations, shared by both backends.
//!
//! Completion and readiness notifications carry `(index, generation)`: a
//! notification for a slot that was closed and reused within the same
//! batch is recognised as stale instead of being delivered to the new
//! owner.

use super::driver::Token;

pub(crate) struct Slots<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
}

struct Entry<T> {
    generation: u32,
    val: Option<T>,
}

impl<T> Slots<T> {
    pub fn new() -> Self {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    pub fn insert(&mut self, val: T) -> (Token, u32) {
        if let Some(i) = self.free.pop() {
            let e = &mut self.entries[i as usize];
            e.val = Some(val);
            (Token(i), e.generation)
        } else {
            let i = self.entries.len() as u32;
            self.entries.push(Entry {
                generation: 0,
                val: Some(val),
            });
            (Token(i), 0)
        }
    }

    pub fn remove(&mut self, t: Token) -> Option<T> {
        let e = self.entries.get_mut(t.index())?;
        let v = e.val.take()?;
        e.generation = e.generation.wrapping_add(1) & 0x00ff_ffff;
        self.free.push(t.0);
        Some(v)
    }

    pub fn get(&self, t: Token) -> Option<&T> {
        self.entries.get(t.index())?.val.as_ref()
    }

    pub fn get_mut(&mut self, t: Token) -> Option<&mut T> {
        self.entries.get_mut(t.index())?.val.as_mut()
    }

    /// The slot if it is live and of generation `generation`.
    pub fn get_generation_mut(&mut self, t: Token, generation: u32) -> Option<&mut T> {
        let e = self.entries.get_mut(t.index())?;
        if e.generation != generation {
            return None;
        }
        e.val.as_mut()
    }

    pub fn generation(&self, t: Token) -> u32 {
        self.entries.get(t.index()).map_or(0, |e| e.generation)
    }
}
