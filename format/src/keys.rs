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

/// The object of segment `seq` written by GC epoch `epoch` (0: the segment as ingest
/// committed it, at [`segment_key`]). GC never overwrites: a rewritten segment is a
/// new object, and the epoch's manifest says which object is current.
pub fn segment_object_key(domain: &str, seq: u64, epoch: u64) -> String {
    if epoch == 0 {
        segment_key(domain, seq)
    } else {
        format!("domains/{domain}/log/{seq:016x}.{epoch:016x}.seg")
    }
}

/// The seq of a segment key, if `key` is one as ingest commits it (not a GC rewrite).
pub fn parse_segment_key(key: &str) -> Option<u64> {
    match parse_segment_object_key(key)? {
        (seq, 0) => Some(seq),
        _ => None,
    }
}

/// `(seq, epoch)` of any segment object key: ingest's (epoch 0) or a GC rewrite.
pub fn parse_segment_object_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".seg")?;
    let hex16 = |h: &str| {
        (h.len() == 16)
            .then(|| u64::from_str_radix(h, 16).ok())
            .flatten()
    };
    match name.split_once('.') {
        None => Some((hex16(name)?, 0)),
        Some((seq, epoch)) => {
            let epoch = hex16(epoch)?;
            (epoch != 0).then_some((hex16(seq)?, epoch))
        }
    }
}

/// Prefix of the domain's GC manifests.
pub fn gc_prefix(domain: &str) -> String {
    format!("domains/{domain}/gc/")
}

/// The manifest of GC epoch `epoch`, created create-only: its existence commits the run.
pub fn manifest_key(domain: &str, epoch: u64) -> String {
    format!("domains/{domain}/gc/{epoch:016x}.manifest")
}

/// The epoch of a manifest key, if `key` is one.
pub fn parse_manifest_key(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let hex = name.strip_suffix(".manifest")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The domain's retention policy (absent: the service's default policy applies).
pub fn retention_key(domain: &str) -> String {
    format!("domains/{domain}/retention.json")
}

/// Prefix of the leases every site holds on the domain's points.
pub fn leases_prefix(domain: &str) -> String {
    format!("domains/{domain}/leases/")
}

/// One lease: `holder` at `site` (names of the safe alphabet).
pub fn lease_key(domain: &str, site: &str, holder: &str) -> String {
    format!("domains/{domain}/leases/{site}/{holder}.json")
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
        assert_eq!(
            parse_segment_object_key(&segment_object_key("d", 5, 3)),
            Some((5, 3))
        );
        assert_eq!(segment_object_key("d", 5, 0), segment_key("d", 5));
        assert_eq!(parse_segment_key(&segment_object_key("d", 5, 3)), None);
        assert_eq!(
            parse_segment_object_key("domains/d/log/0000000000000005.0000000000000000.seg"),
            None
        );
        assert_eq!(parse_manifest_key(&manifest_key("d", 9)), Some(9));
        // A rewrite of seq s sorts before ingest's object of s, so a listing after the
        // newest indexed segment never meets rewrites of older ones.
        assert!(segment_object_key("d", 5, 1) < segment_key("d", 5));
    }
}
