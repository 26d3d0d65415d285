//! The gossip wire format inside the seal: a one-byte kind, then either foca's own SWIM
//! message or one of the catalog's postcard-encoded messages. Node records themselves are
//! prost-encoded `strata.v1.NodeRecord`s. Every decode here is bounded.

use crate::membership::identity::NodeIdentity;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use strata_proto::v1::NodeRecord;

/// Largest UDP payload we send, sealed: safely under common path MTUs.
pub const MAX_DATAGRAM: usize = 1200;
/// Largest TCP frame (sealed) we accept or send.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Largest encoded node record we accept.
pub const MAX_RECORD: usize = 1024 * 1024;
/// Most records or digest entries in one message.
pub const MAX_ITEMS: usize = 10_000;
/// Longest node id or name we accept.
pub const MAX_NAME: usize = 253;

/// First byte of an opened UDP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The rest is a foca (SWIM) packet.
    Swim = 1,
    /// The rest is a postcard [`Datagram`].
    Catalog = 2,
}

impl Kind {
    /// Reads the kind byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Swim),
            2 => Some(Self::Catalog),
            _ => None,
        }
    }
}

/// Catalog messages that travel in their own UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram {
    /// Sent straight to every live member by a node leaving gracefully, so peers mark it
    /// `left` at once instead of waiting for the SWIM update.
    Leave(Departure),
    /// Sent by the member whose probe failed, straight to the member it now suspects, and
    /// again every second while the suspicion lasts (Lifeguard's "buddy system"): gossip
    /// alone can miss the one node that must refute. The suspect refutes and announces
    /// itself to `from`, whose suspicion timer is the one that would declare it down.
    Suspect(Suspicion),
}

/// A suspicion of `member` at SWIM incarnation `incarnation`, held by `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspicion {
    pub member: NodeIdentity,
    pub incarnation: u16,
    pub from: NodeIdentity,
}

/// A graceful departure: which incarnation left and its last record version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Departure {
    pub id: String,
    pub bump: u64,
    pub version: u64,
}

/// Items piggybacked on SWIM messages as foca custom broadcasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    /// A whole prost-encoded record that fits in a datagram.
    Record(Vec<u8>),
    /// A record too big for a datagram: receivers that are behind pull it over TCP.
    Announce {
        id: String,
        version: u64,
        addr: SocketAddr,
    },
    /// A node left gracefully.
    Left(Departure),
}

/// Messages of the TCP push/pull exchange (one request, one reply, optionally one push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Anti-entropy: the sender's (node id, version) of every record it holds.
    Digest(Vec<(String, u64)>),
    /// Ask for the full records of these node ids.
    Pull(Vec<String>),
    /// Records newer than the requester's, and ids the replier wants pushed back.
    Reply {
        records: Vec<Vec<u8>>,
        want: Vec<String>,
    },
    /// Records the replier asked for.
    Push(Vec<Vec<u8>>),
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message does not decode: {0}")]
    Invalid(String),
    #[error("message carries {0} items, more than {MAX_ITEMS}")]
    TooMany(usize),
    #[error("record is {0} bytes, more than {MAX_RECORD}")]
    RecordTooBig(usize),
    #[error("record has an empty or overlong id or name")]
    BadRecord,
}

/// Encodes a postcard message; failures only come from serde impls, which ours lack.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_allocvec(message).unwrap_or_default()
}

/// Decodes a postcard message from untrusted bytes.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// Decodes a stream message and checks its counts.
pub fn decode_stream(bytes: &[u8]) -> Result<Stream, DecodeError> {
    let message: Stream = decode(bytes)?;
    let count = match &message {
        Stream::Digest(items) => items.len(),
        Stream::Pull(ids) => ids.len(),
        Stream::Reply { records, want } => records.len().max(want.len()),
        Stream::Push(records) => records.len(),
    };
    if count > MAX_ITEMS {
        return Err(DecodeError::TooMany(count));
    }
    Ok(message)
}

/// Encodes a node record.
pub fn encode_record(record: &NodeRecord) -> Vec<u8> {
    record.encode_to_vec()
}

/// Decodes a node record from untrusted bytes and checks its identity fields.
pub fn decode_record(bytes: &[u8]) -> Result<NodeRecord, DecodeError> {
    if bytes.len() > MAX_RECORD {
        return Err(DecodeError::RecordTooBig(bytes.len()));
    }
    let record = NodeRecord::decode(bytes).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    let bad = |s: &str| s.is_empty() || s.len() > MAX_NAME;
    if bad(&record.id) || bad(&record.name) {
        return Err(DecodeError::BadRecord);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_stream(&[9, 9, 9]).is_err());
        assert!(decode_record(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(
            decode_record(&encode_record(&NodeRecord::default())),
            Err(DecodeError::BadRecord)
        );
        let many = Stream::Pull(vec![String::new(); MAX_ITEMS + 1]);
        assert_eq!(
            decode_stream(&encode(&many)),
            Err(DecodeError::TooMany(MAX_ITEMS + 1))
        );
    }
}
