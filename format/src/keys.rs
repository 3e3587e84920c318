//! The bucket layout (DESIGN.md section 4): where each object of a domain lives.

use crate::PackId;

/// Prefix of everything that belongs to `domain`.
pub fn domain_prefix(domain: &str) -> String {
    format!("domains/{domain}/")
}

/// The domain definition.
pub fn domain_key(domain: &str) -> String {
    format!("domains/{domain}/domain.json")
}

/// The ownership record, changed only by if-match writes.
pub fn owner_key(domain: &str) -> String {
    format!("domains/{domain}/owner.json")
}

/// Prefix of the domain's log.
pub fn log_prefix(domain: &str) -> String {
    format!("domains/{domain}/log/")
}

/// One segment; the zero-padded hex seq makes key order equal seq order.
pub fn segment_key(domain: &str, seq: u64) -> String {
    format!("domains/{domain}/log/{seq:016x}.seg")
}

/// Prefix of the domain's packs.
pub fn packs_prefix(domain: &str) -> String {
    format!("domains/{domain}/packs/")
}

/// One pack.
pub fn pack_key(domain: &str, id: PackId) -> String {
    format!("domains/{domain}/packs/{id}.pack")
}

/// The seq of a segment key, if `key` is one.
pub fn parse_segment_key(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The id of a pack key, if `key` is one.
pub fn parse_pack_key(key: &str) -> Option<PackId> {
    let name = key.rsplit('/').next()?;
    let hex = name.strip_suffix(".pack")?;
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(PackId)
}

/// The domain name of a `domains/<name>/domain.json` key.
pub fn parse_domain_key(key: &str) -> Option<&str> {
    key.strip_prefix("domains/")?.strip_suffix("/domain.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        assert_eq!(parse_segment_key(&segment_key("d", 0x1234)), Some(0x1234));
        let id = PackId(0xabcdef);
        assert_eq!(parse_pack_key(&pack_key("d", id)), Some(id));
        assert_eq!(parse_domain_key(&domain_key("web")), Some("web"));
        assert_eq!(parse_segment_key("domains/d/log/12.seg"), None);
        assert!(segment_key("d", 2) < segment_key("d", 10));
    }
}
