//! Cursors for continuing a truncated result: an opaque token holding the
//! offset reached and a fingerprint of the statement and its parameters, so
//! a cursor cannot be replayed against a different query.

use std::hash::{Hash, Hasher};

use base64::Engine as _;

use super::{QueryError, SqlParams};

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Characters of every cursor: 16 bytes in unpadded base64 (row formats
/// count it into an answer's size before they know whether it gets one).
pub const TOKEN_LEN: usize = 22;

/// A stable fingerprint of a statement and its parameters.
pub fn fingerprint(sql: &str, params: Option<&SqlParams>) -> u64 {
    // FNV-1a over the SQL and the parameters' JSON: stable across builds,
    // unlike std's randomly seeded hasher.
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    sql.hash(&mut hasher);
    if let Some(params) = params {
        serde_json::to_string(params)
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

pub fn encode(offset: u64, fingerprint: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&offset.to_be_bytes());
    bytes[8..].copy_from_slice(&fingerprint.to_be_bytes());
    ENGINE.encode(bytes)
}

/// The offset a cursor points at, if it belongs to this query.
pub fn decode(cursor: &str, expected_fingerprint: u64) -> Result<u64, QueryError> {
    let invalid = || {
        QueryError::InvalidArgument(
            "the cursor is not valid for this query; send the same sql and params that returned it"
                .into(),
        )
    };
    let bytes = ENGINE.decode(cursor.trim()).map_err(|_| invalid())?;
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| invalid())?;
    let offset = u64::from_be_bytes(bytes[..8].try_into().unwrap());
    let fingerprint = u64::from_be_bytes(bytes[8..].try_into().unwrap());
    if fingerprint != expected_fingerprint {
        return Err(invalid());
    }
    Ok(offset)
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_for_the_same_query() {
        let fp = fingerprint("SELECT 1", None);
        assert_eq!(decode(&encode(250, fp), fp).unwrap(), 250);
    }

    #[test]
    fn a_cursor_from_another_query_is_refused() {
        let token = encode(10, fingerprint("SELECT 1", None));
        assert!(decode(&token, fingerprint("SELECT 2", None)).is_err());
    }

    #[test]
    fn every_cursor_has_the_same_length() {
        for offset in [0, 1, u64::MAX] {
            assert_eq!(encode(offset, u64::MAX).len(), TOKEN_LEN);
        }
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        assert!(decode("not a cursor!", 1).is_err());
    }
}
