//! Index key encodings. Big-endian integers so that RocksDB's byte order is numeric
//! order; every key starts with `domain \0` so one domain is one contiguous range.

use tidemark_format::ChunkHash;

/// `domain \0`: the start of every key of a domain.
pub fn domain_head(domain: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(domain.len() + 32);
    k.extend_from_slice(domain.as_bytes());
    k.push(0);
    k
}

/// First key after every key of `domain` (names never contain `\0` or `\x01`).
pub fn domain_end(domain: &str) -> Vec<u8> {
    let mut k = domain.as_bytes().to_vec();
    k.push(1);
    k
}

pub fn seq(domain: &str, seq: u64) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Signed times sort correctly once the sign bit is flipped.
pub fn time_bits(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

pub fn time(domain: &str, t: i64, seq: u64) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(&time_bits(t).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn disk_prefix(domain: &str, disk: u32) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(&disk.to_be_bytes());
    k
}

pub fn disk_seq(domain: &str, disk: u32, seq: u64) -> Vec<u8> {
    let mut k = disk_prefix(domain, disk);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn chunk(domain: &str, hash: &ChunkHash) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(&hash.0);
    k
}

pub fn pack(domain: &str, id: u128) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn marker(domain: &str, name: &str, seq: u64) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn state(domain: &str, name: &[u8]) -> Vec<u8> {
    let mut k = domain_head(domain);
    k.extend_from_slice(name);
    k
}

pub fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}
