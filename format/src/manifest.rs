//! The GC manifest: what a domain's log and packs are after one GC run (DESIGN.md
//! section 9, docs/design-notes.md "Garbage collection").
//!
//! GC never overwrites an object. It writes rewritten segments as new objects, then
//! creates `gc/<epoch>.manifest` with a create-only write: that is the run's commit
//! point. The manifest is a full snapshot of the log up to `upto` (which object is
//! current for each seq) and of the live packs, so any site can bring its index to it
//! from any earlier state, and a rebuild needs the newest manifest plus the segments
//! committed after `upto`. It also lists what the run made garbage, deleted by a later
//! run once the grace period passed and no reader holds an older epoch.
//!
//! Layout: `magic "TDMKGCM\0"`, `version u16`, the fields below, then the BLAKE3 of
//! everything before it.

use crate::codec::{check_header, verify_trailer, Reader, Writer};
use crate::names::validate_name;
use crate::{FormatError, PackId, Result, WriterId};

const MAGIC: &[u8; 8] = b"TDMKGCM\0";
const VERSION: u16 = 1;
const WHAT: &str = "gc manifest";

/// One segment object: the seq it stands for and the GC epoch that wrote it (0: ingest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentVersion {
    /// The seq.
    pub seq: u64,
    /// The epoch of the object (0: the segment as ingest committed it).
    pub epoch: u64,
}

/// What one GC run left: the current log up to `upto`, the live packs, the garbage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Domain it belongs to.
    pub domain: String,
    /// The run's epoch: one more than the previous manifest's.
    pub epoch: u64,
    /// The owner that ran GC.
    pub writer: WriterId,
    /// When the manifest was committed (unix nanoseconds).
    pub time: i64,
    /// The newest seq the run looked at; segments after it are not its business.
    pub upto: u64,
    /// The current object of every segment with seq ≤ `upto`, ascending by seq.
    pub segments: Vec<SegmentVersion>,
    /// Seqs of `segments` that are no longer points although their object is a
    /// delta: GC did not retain them and left their blocks where they are.
    pub demoted: Vec<u64>,
    /// Every pack holding a chunk some segment ≤ `upto` may read, ascending. Packs
    /// named by segments after `upto` are live too.
    pub live_packs: Vec<PackId>,
    /// Packs this run wrote (rewritten segments and repacks), a subset of `live_packs`.
    pub new_packs: Vec<PackId>,
    /// Segment objects this run superseded, deleted after the grace period.
    pub garbage_segments: Vec<SegmentVersion>,
    /// Packs this run left without a live chunk, deleted after the grace period.
    pub garbage_packs: Vec<PackId>,
}

fn ascending<T: Ord>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

impl Manifest {
    /// Checks the rules every manifest obeys.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| FormatError::Invalid(format!("gc manifest {}: {m}", self.epoch));
        validate_name("domain", &self.domain)?;
        if self.epoch == 0 {
            return Err(bad("epoch 0 is ingest's"));
        }
        if !ascending(&self.segments) || !ascending(&self.live_packs) {
            return Err(bad("segments or packs not in ascending order"));
        }
        if self.segments.windows(2).any(|w| w[0].seq == w[1].seq) {
            return Err(bad("a seq listed twice"));
        }
        if self
            .segments
            .iter()
            .any(|s| s.seq > self.upto || s.epoch > self.epoch)
        {
            return Err(bad("a segment after upto or from a later epoch"));
        }
        if !ascending(&self.demoted)
            || self.demoted.iter().any(|q| {
                self.segments.binary_search_by_key(q, |s| s.seq).is_err() || *q == self.upto
            })
        {
            return Err(bad("a demoted seq that is not listed, or the newest"));
        }
        if self.segments.last().is_some_and(|s| s.seq != self.upto) {
            return Err(bad("the newest point it looked at is missing"));
        }
        if self
            .new_packs
            .iter()
            .any(|p| self.live_packs.binary_search(p).is_err())
        {
            return Err(bad("a new pack that is not live"));
        }
        if self
            .garbage_packs
            .iter()
            .any(|p| self.live_packs.binary_search(p).is_ok())
        {
            return Err(bad("a pack both live and garbage"));
        }
        if self
            .garbage_segments
            .iter()
            .any(|g| self.segments.binary_search(g).is_ok())
        {
            return Err(bad("a segment object both current and garbage"));
        }
        Ok(())
    }

    /// Encodes the object.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut w = Writer::new();
        w.bytes(MAGIC);
        w.u16(VERSION);
        w.str(&self.domain);
        w.u64(self.epoch);
        w.str(&self.writer.site);
        w.u64(self.writer.generation);
        w.i64(self.time);
        w.u64(self.upto);
        let versions = |w: &mut Writer, v: &[SegmentVersion]| {
            w.u32(v.len() as u32);
            for s in v {
                w.u64(s.seq);
                w.u64(s.epoch);
            }
        };
        let packs = |w: &mut Writer, v: &[PackId]| {
            w.u32(v.len() as u32);
            for p in v {
                w.u128(p.0);
            }
        };
        versions(&mut w, &self.segments);
        w.u32(self.demoted.len() as u32);
        for q in &self.demoted {
            w.u64(*q);
        }
        packs(&mut w, &self.live_packs);
        packs(&mut w, &self.new_packs);
        versions(&mut w, &self.garbage_segments);
        packs(&mut w, &self.garbage_packs);
        let sum = blake3::hash(&w.buf);
        w.bytes(sum.as_bytes());
        Ok(w.buf)
    }

    /// Decodes and verifies an object; any damage is `Corrupt`.
    pub fn decode(data: &[u8]) -> Result<Manifest> {
        let body = verify_trailer(data, WHAT)?;
        let mut r = Reader::new(body, WHAT);
        check_header(&mut r, MAGIC, VERSION, WHAT)?;
        let domain = r.str()?;
        let epoch = r.u64()?;
        let site = r.str()?;
        let generation = r.u64()?;
        let time = r.i64()?;
        let upto = r.u64()?;
        fn versions(r: &mut Reader<'_>) -> Result<Vec<SegmentVersion>> {
            let n = r.count(16)?;
            (0..n)
                .map(|_| {
                    Ok(SegmentVersion {
                        seq: r.u64()?,
                        epoch: r.u64()?,
                    })
                })
                .collect()
        }
        fn packs(r: &mut Reader<'_>) -> Result<Vec<PackId>> {
            let n = r.count(16)?;
            (0..n).map(|_| Ok(PackId(r.u128()?))).collect()
        }
        let segments = versions(&mut r)?;
        let n = r.count(8)?;
        let demoted = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
        let live_packs = packs(&mut r)?;
        let new_packs = packs(&mut r)?;
        let garbage_segments = versions(&mut r)?;
        let garbage_packs = packs(&mut r)?;
        r.finish()?;
        let m = Manifest {
            domain,
            epoch,
            writer: WriterId { site, generation },
            time,
            upto,
            segments,
            demoted,
            live_packs,
            new_packs,
            garbage_segments,
            garbage_packs,
        };
        m.validate()
            .map_err(|e| FormatError::corrupt(WHAT, e.to_string()))?;
        Ok(m)
    }

    /// Decodes the object stored as `domain`'s manifest `epoch`; one that belongs
    /// elsewhere is `Corrupt`.
    pub fn decode_at(data: &[u8], domain: &str, epoch: u64) -> Result<Manifest> {
        let m = Manifest::decode(data)?;
        if m.domain != domain || m.epoch != epoch {
            return Err(FormatError::corrupt(
                WHAT,
                format!(
                    "stored as {domain}/{epoch} but holds {}/{}",
                    m.domain, m.epoch
                ),
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let v = |seq, epoch| SegmentVersion { seq, epoch };
        Manifest {
            domain: "web".into(),
            epoch: 3,
            writer: WriterId {
                site: "a".into(),
                generation: 2,
            },
            time: 99,
            upto: 40,
            segments: vec![v(7, 3), v(12, 0), v(40, 0)],
            demoted: vec![12],
            live_packs: vec![PackId(1), PackId(5), PackId(9)],
            new_packs: vec![PackId(5)],
            garbage_segments: vec![v(7, 0), v(8, 0)],
            garbage_packs: vec![PackId(2)],
        }
    }

    #[test]
    fn roundtrip_flips_and_truncations() {
        let m = sample();
        let bytes = m.encode().expect("encode");
        assert_eq!(Manifest::decode_at(&bytes, "web", 3).expect("decode"), m);
        assert!(Manifest::decode_at(&bytes, "web", 4).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Manifest::decode(&b).is_err(), "flip at {i}");
            assert!(Manifest::decode(&bytes[..i]).is_err(), "truncated to {i}");
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.garbage_packs.push(PackId(9));
        assert!(m.encode().is_err());
        let mut m = sample();
        m.segments.pop();
        assert!(m.encode().is_err(), "upto must be listed");
        let mut m = sample();
        m.demoted = vec![13];
        assert!(m.encode().is_err());
        let mut m = sample();
        m.new_packs.push(PackId(4));
        assert!(m.encode().is_err());
    }
}
