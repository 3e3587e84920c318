//! The JSON records of a domain: `domain.json` and `owner.json`.
//!
//! Both stay plain JSON so that operators can read them with any tool, wrapped in an
//! envelope `{"format": ..., "version": 1, "body": {...}, "blake3": "<hex>"}` whose
//! checksum covers the exact text of `body`, so a flipped byte is still detected.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::names::validate_name;
use crate::{FormatError, Result, BLOCK_SIZE, MAX_DISK_BYTES};

const VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    format: String,
    version: u16,
    #[serde(borrow)]
    body: &'a RawValue,
    blake3: String,
}

fn encode<T: Serialize>(format: &str, body: &T) -> Result<Vec<u8>> {
    let text = serde_json::to_string(body).map_err(|e| FormatError::Invalid(e.to_string()))?;
    let raw = RawValue::from_string(text).map_err(|e| FormatError::Invalid(e.to_string()))?;
    let env = Envelope {
        format: format.into(),
        version: VERSION,
        blake3: blake3::hash(raw.get().as_bytes()).to_hex().to_string(),
        body: &raw,
    };
    let mut out =
        serde_json::to_vec_pretty(&env).map_err(|e| FormatError::Invalid(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

fn decode<T: DeserializeOwned>(format: &'static str, data: &[u8]) -> Result<T> {
    let env: Envelope<'_> =
        serde_json::from_slice(data).map_err(|e| FormatError::corrupt(format, e.to_string()))?;
    if env.format != format {
        return Err(FormatError::corrupt(
            format,
            format!("holds a {:?} record", env.format),
        ));
    }
    if env.version != VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: format.into(),
            found: env.version,
            supported: VERSION,
        });
    }
    if blake3::hash(env.body.get().as_bytes()).to_hex().as_str() != env.blake3 {
        return Err(FormatError::corrupt(format, "checksum mismatch"));
    }
    serde_json::from_str(env.body.get()).map_err(|e| FormatError::corrupt(format, e.to_string()))
}

/// One disk of a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The disk's name, unique in the domain.
    pub name: String,
    /// Size in bytes, a multiple of the block size.
    pub size: u64,
}

impl DiskSpec {
    /// Number of blocks.
    pub fn blocks(&self) -> u32 {
        (self.size / BLOCK_SIZE as u64) as u32
    }
}

/// `domain.json`: what a domain is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRecord {
    /// The domain's name.
    pub name: String,
    /// Block size of every disk (4096).
    pub block_size: u32,
    /// The disks; a disk's position is its index in segments. Disks are only appended.
    pub disks: Vec<DiskSpec>,
    /// Creation time, unix nanoseconds.
    pub created: i64,
}

impl DomainRecord {
    /// Checks names, sizes and uniqueness.
    pub fn validate(&self) -> Result<()> {
        validate_name("domain", &self.name)?;
        if self.block_size != BLOCK_SIZE {
            return Err(FormatError::Invalid(format!(
                "block size {} (only {BLOCK_SIZE} is supported)",
                self.block_size
            )));
        }
        if self.disks.is_empty() {
            return Err(FormatError::Invalid(format!(
                "domain {}: no disks",
                self.name
            )));
        }
        for (i, d) in self.disks.iter().enumerate() {
            validate_name("disk", &d.name)?;
            if d.size == 0 || !d.size.is_multiple_of(BLOCK_SIZE as u64) || d.size > MAX_DISK_BYTES {
                return Err(FormatError::Invalid(format!(
                    "disk {}: size {} must be a positive multiple of {BLOCK_SIZE} up to {MAX_DISK_BYTES}",
                    d.name, d.size
                )));
            }
            if self.disks[..i].iter().any(|o| o.name == d.name) {
                return Err(FormatError::Invalid(format!("disk {} named twice", d.name)));
            }
        }
        Ok(())
    }

    /// Index of the disk called `name`.
    pub fn disk_index(&self, name: &str) -> Option<u32> {
        self.disks
            .iter()
            .position(|d| d.name == name)
            .map(|i| i as u32)
    }

    /// Encodes `domain.json`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        encode("tidemark.domain", self)
    }

    /// Decodes and verifies `domain.json`.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let r: Self = decode("tidemark.domain", data)?;
        r.validate()
            .map_err(|e| FormatError::corrupt("tidemark.domain", e.to_string()))?;
        Ok(r)
    }
}

/// `owner.json`: the one site allowed to append to the domain's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRecord {
    /// Site id of the owner.
    pub site: String,
    /// Bumped at every change of owner; segments carry it.
    pub generation: u64,
    /// When this owner took over, unix nanoseconds.
    pub since: i64,
}

impl OwnerRecord {
    /// Encodes `owner.json`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode("tidemark.owner", self)
    }

    /// Decodes and verifies `owner.json`.
    pub fn decode(data: &[u8]) -> Result<Self> {
        decode("tidemark.owner", data)
    }
}

/// `retention.json`: which points of a domain GC keeps (DESIGN.md section 9). The
/// newest point and the points leased by running work are kept whatever it says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Every point of this many recent seconds is kept.
    pub pitr_window_secs: u64,
    /// Then the newest point of each of this many recent hours,
    pub hourly: u32,
    /// days (UTC),
    pub daily: u32,
    /// ISO weeks,
    pub weekly: u32,
    /// and months.
    pub monthly: u32,
    /// Points carrying one of these markers are kept until unpinned.
    #[serde(default)]
    pub pinned: Vec<String>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            pitr_window_secs: 24 * 3600,
            hourly: 48,
            daily: 14,
            weekly: 8,
            monthly: 12,
            pinned: Vec::new(),
        }
    }
}

impl RetentionPolicy {
    /// Checks the pinned marker names.
    pub fn validate(&self) -> Result<()> {
        for m in &self.pinned {
            validate_name("marker", m)?;
        }
        Ok(())
    }

    /// Encodes `retention.json`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        encode("tidemark.retention", self)
    }

    /// Decodes and verifies `retention.json`.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let r: Self = decode("tidemark.retention", data)?;
        r.validate()
            .map_err(|e| FormatError::corrupt("tidemark.retention", e.to_string()))?;
        Ok(r)
    }
}

/// `leases/<site>/<holder>.json`: points some running work of a site reads (a restore,
/// a test copy, a replica), which GC keeps, and the index epoch that work reads at,
/// whose superseded objects GC keeps too. A lease not renewed by `expires` is void.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    /// The site holding it.
    pub site: String,
    /// Who at the site holds it (e.g. `restore-12`, `replica`).
    pub holder: String,
    /// The point held.
    pub seq: u64,
    /// Whether every point from `seq` on is held (a replica follows the log).
    pub onwards: bool,
    /// The GC epoch of the holder's index when it last renewed the lease.
    pub epoch: u64,
    /// Unix nanoseconds after which the lease is void.
    pub expires: i64,
}

impl LeaseRecord {
    /// Whether the lease holds point `seq`.
    pub fn holds(&self, seq: u64) -> bool {
        seq == self.seq || (self.onwards && seq > self.seq)
    }

    /// Encodes a lease.
    pub fn encode(&self) -> Result<Vec<u8>> {
        validate_name("site", &self.site)?;
        validate_name("lease holder", &self.holder)?;
        encode("tidemark.lease", self)
    }

    /// Decodes and verifies a lease.
    pub fn decode(data: &[u8]) -> Result<Self> {
        decode("tidemark.lease", data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DomainRecord {
        DomainRecord {
            name: "web".into(),
            block_size: BLOCK_SIZE,
            disks: vec![DiskSpec {
                name: "root".into(),
                size: 1 << 30,
            }],
            created: 17,
        }
    }

    #[test]
    fn roundtrip_and_flips() {
        let bytes = sample().encode().expect("encode");
        assert_eq!(DomainRecord::decode(&bytes).expect("decode"), sample());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            // Flipping insignificant whitespace may still parse to the same record;
            // what matters is that it never parses to a different one.
            if let Ok(r) = DomainRecord::decode(&b) {
                assert_eq!(r, sample(), "flip at {i} gave a different record");
            }
        }
        let o = OwnerRecord {
            site: "a".into(),
            generation: 3,
            since: 1,
        };
        assert_eq!(
            OwnerRecord::decode(&o.encode().expect("enc")).expect("dec"),
            o
        );
        assert!(DomainRecord::decode(&o.encode().expect("enc")).is_err());
        let mut p = RetentionPolicy::default();
        p.pinned.push("golden".into());
        let bytes = p.encode().expect("enc");
        assert_eq!(RetentionPolicy::decode(&bytes).expect("dec"), p);
        assert!(LeaseRecord::decode(&bytes).is_err());
        p.pinned.push("a/b".into());
        assert!(p.encode().is_err());
        let l = LeaseRecord {
            site: "b".into(),
            holder: "replica".into(),
            seq: 7,
            onwards: true,
            epoch: 2,
            expires: 5,
        };
        assert_eq!(
            LeaseRecord::decode(&l.encode().expect("enc")).expect("dec"),
            l
        );
        assert!(l.holds(7) && l.holds(9) && !l.holds(6));
    }

    #[test]
    fn invalid_domains_are_refused() {
        let mut d = sample();
        d.disks[0].size = 4097;
        assert!(d.encode().is_err());
        let mut d = sample();
        d.disks.push(d.disks[0].clone());
        assert!(d.encode().is_err());
    }
}
