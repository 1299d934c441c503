//! Tokens already verified, by the SHA-256 of the whole token, so a client
//! that reuses its token pays for the signature check (tens of microseconds
//! for RS256) once. An entry lives until the token expires, at most
//! [`MAX_LIFETIME`], and only while the key set it was verified with is
//! current: every fetched JWKS starts a new generation, so a key removed
//! from the set stops verifying cached tokens too. Bounded in size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// The longest a verified token is remembered, in seconds.
pub const MAX_LIFETIME: u64 = 300;

/// Verified claims, valid until (unix seconds), under key-set generation.
type Entry = (Arc<Map<String, Value>>, u64, u64);

/// Verified claims by token digest.
#[derive(Debug)]
pub struct Verified {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    max: usize,
}

impl Verified {
    /// A cache of at most `max` tokens (0 turns it off).
    pub fn new(max: usize) -> Verified {
        Verified {
            entries: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The claims of a token verified before, still valid at `now` (unix
    /// seconds) and verified with the current key set (`generation`: a
    /// fetched key set replaces what was verified with the previous one).
    pub fn get(
        &self,
        digest: &[u8; 32],
        now: u64,
        generation: u64,
    ) -> Option<Arc<Map<String, Value>>> {
        if self.max == 0 {
            return None;
        }
        let m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.get(digest)
            .filter(|(_, until, g)| *until > now && *g == generation)
            .map(|(c, _, _)| c.clone())
    }

    /// Remembers a verified token until `until` (unix seconds).
    pub fn put(
        &self,
        digest: [u8; 32],
        claims: Arc<Map<String, Value>>,
        until: u64,
        generation: u64,
    ) {
        if self.max == 0 {
            return;
        }
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= self.max {
            let now = super::now();
            m.retain(|_, (_, u, _)| *u > now);
            if m.len() >= self.max {
                m.clear();
            }
        }
        m.insert(digest, (claims, until, generation));
    }
}
