//! The replication stream: batches of writes, flushes and markers.
//!
//! A batch is `application/octet-stream`: records of a 32-byte little-endian header
//! (disk u32, flags u32, offset u64, length u64, capture time i64 in unix ns, 0 for
//! the time of receipt) followed by `length` bytes of data, except when flag bit 0
//! (zero) says the range now reads as zeros and no data follows. Binary, because the
//! stream is block data: JSON or base64 would cost a third more bytes and a copy.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use tidemark_format::Marker;
use tidemark_ingest::{CommittedPoint, Write};
use tidemark_pitr_index::format_time;
use utoipa::ToSchema;

use super::domains::open;
use super::extract::{read_body, ApiJson};
use super::points::Point;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::Service;

/// Bytes of a write's header on the wire.
pub const WIRE_HEADER_BYTES: usize = 32;
/// Flag: the range is zeroed; no data follows.
pub const FLAG_ZERO: u32 = 1;
/// Capture times may run ahead of the service's clock by this much (clock skew).
const MAX_CLOCK_AHEAD_NS: i64 = 300_000_000_000;
/// Zero writes are staged as slices of one shared buffer of this size.
const ZERO_SLICE: usize = 1 << 20;

fn zeros() -> Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    ZEROS
        .get_or_init(|| Bytes::from(vec![0u8; ZERO_SLICE]))
        .clone()
}

/// Encodes writes for the wire: (disk, offset, data or None for zeroes with length,
/// capture time).
pub fn encode_writes<'a>(
    writes: impl IntoIterator<Item = (u32, u64, WireData<'a>, i64)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (disk, offset, data, time) in writes {
        let (flags, len, bytes) = match data {
            WireData::Bytes(b) => (0u32, b.len() as u64, b),
            WireData::Zero(len) => (FLAG_ZERO, len, &[][..]),
        };
        out.extend_from_slice(&disk.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&time.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The payload of one write on the wire.
pub enum WireData<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// This many zero bytes, sent as a flag.
    Zero(u64),
}

/// Decodes a batch of at most `max_bytes` of data (zeroed ranges count: they are
/// staged block by block); every malformed record is an error and the whole batch is
/// refused.
fn decode_writes(mut body: Bytes, now: i64, max_bytes: u64) -> ApiResult<Vec<Write>> {
    let mut writes = Vec::new();
    let mut n = 0usize;
    let mut total = 0u64;
    while body.has_remaining() {
        if body.remaining() < WIRE_HEADER_BYTES {
            return Err(ApiError::invalid(format!(
                "write {n}: truncated header ({} of {WIRE_HEADER_BYTES} bytes)",
                body.remaining()
            )));
        }
        let disk = body.get_u32_le();
        let flags = body.get_u32_le();
        let offset = body.get_u64_le();
        let len = body.get_u64_le();
        let time = body.get_i64_le();
        let time = if time == 0 { now } else { time };
        // Point times never go back, so one time from the future would hold every
        // later point of the domain at it.
        if time > now.saturating_add(MAX_CLOCK_AHEAD_NS) {
            return Err(ApiError::invalid(format!(
                "write {n}: capture time {time} ns is more than 5 minutes ahead of the service's clock"
            )));
        }
        total = total.saturating_add(len);
        if total > max_bytes {
            return Err(ApiError::too_large(format!(
                "the batch holds more than {max_bytes} bytes, the most that fit in a segment"
            )));
        }
        if flags & !FLAG_ZERO != 0 {
            return Err(ApiError::invalid(format!(
                "write {n}: unknown flags {flags:#x}"
            )));
        }
        if flags & FLAG_ZERO != 0 {
            // Zeroes are staged as shared slices; the writer checks range and alignment.
            let mut left = len;
            let mut at = offset;
            if left == 0 {
                return Err(ApiError::invalid(format!("write {n}: zero length")));
            }
            while left > 0 {
                let take = left.min(ZERO_SLICE as u64);
                writes.push(Write {
                    disk,
                    offset: at,
                    data: zeros().slice(..take as usize),
                    time,
                });
                at = at.saturating_add(take);
                left -= take;
            }
        } else {
            if len > body.remaining() as u64 {
                return Err(ApiError::invalid(format!(
                    "write {n}: length {len} but only {} bytes follow",
                    body.remaining()
                )));
            }
            writes.push(Write {
                disk,
                offset,
                data: body.split_to(len as usize),
                time,
            });
        }
        n += 1;
    }
    if writes.is_empty() {
        return Err(ApiError::invalid("the batch holds no write"));
    }
    Ok(writes)
}

/// What a push was committed as.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Pushed {
    /// The point that holds the writes.
    pub seq: u64,
    /// Its time (RFC 3339).
    pub time: String,
    /// Writes in the batch.
    pub writes: u64,
    /// Bytes of data in the batch (zeroed ranges included).
    pub bytes: u64,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/writes", tag = "writes",
    params(("domain" = String, Path, description = "Domain name")),
    request_body(
        content = Vec<u8>, content_type = "application/octet-stream",
        description = "Records of a 32-byte little-endian header (disk u32, flags u32, offset u64, length u64, capture time i64 unix ns or 0 for now) and `length` bytes of data; flag 1 means zeroed, no data follows. Offsets and lengths are multiples of 4096."
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Committed: the writes are durable in the store", body = Pushed),
        (status = 400, description = "Malformed, misaligned or out of range; nothing was written", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another site owns the domain", body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
/// Pushes a batch of writes; answers once they are committed in the object store.
pub async fn push_writes(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<Pushed>> {
    let body = read_body(body, svc.config.max_push_body() as usize).await?;
    let writes = decode_writes(
        body,
        tidemark_ingest::now_ns(),
        svc.config.ingest.seal_bytes,
    )?;
    let rec = open(&svc, &name).await?;
    let count = writes.len() as u64;
    let bytes: u64 = writes.iter().map(|w| w.data.len() as u64).sum();
    let p = svc.pipes.push(&rec.name, writes).await?;
    Ok(Json(Pushed {
        seq: p.seq,
        time: format_time(p.time),
        writes: count,
        bytes,
    }))
}

/// What a flush or a marker produced.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Sealed {
    /// The point sealed, or the newest point if nothing was waiting.
    pub point: Option<Point>,
}

fn sealed(svc: &Service, domain: &str, p: Option<CommittedPoint>) -> ApiResult<Sealed> {
    let meta = match p {
        Some(p) => svc.index.segment(domain, p.seq)?,
        None => svc.index.last_segment(domain)?,
    };
    Ok(Sealed {
        point: meta.as_ref().map(Point::from),
    })
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/flush", tag = "writes",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Sealed),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
/// Commits whatever is waiting; answers with the newest point.
pub async fn flush(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Sealed>> {
    let rec = open(&svc, &name).await?;
    let p = svc.pipes.seal(&rec.name, Vec::new()).await?;
    Ok(Json(sealed(&svc, &rec.name, p)?))
}

/// A marker to put on the next point.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMarker {
    /// Name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// The protected site vouches for this point (application-consistent, tested).
    #[serde(default)]
    pub known_good: bool,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/markers", tag = "writes",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = NewMarker,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A point holding every write pushed before, named by the marker", body = Sealed),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
/// Seals a point holding every write pushed so far and names it.
pub async fn add_marker(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(m): ApiJson<NewMarker>,
) -> ApiResult<Json<Sealed>> {
    tidemark_format::names::validate_name("marker", &m.name)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let rec = open(&svc, &name).await?;
    let p = svc
        .pipes
        .seal(
            &rec.name,
            vec![Marker {
                name: m.name,
                known_good: m.known_good,
            }],
        )
        .await?;
    Ok(Json(sealed(&svc, &rec.name, p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_bad_ones_are_refused() {
        let data = vec![7u8; 8192];
        let wire = encode_writes([
            (0, 4096, WireData::Bytes(&data), 5),
            (1, 0, WireData::Zero(3 << 20), 0),
        ]);
        let writes = decode_writes(Bytes::from(wire.clone()), 99, 64 << 20).expect("decodes");
        assert_eq!(writes.len(), 1 + 3);
        assert_eq!(
            (writes[0].disk, writes[0].offset, writes[0].time),
            (0, 4096, 5)
        );
        assert_eq!(writes[0].data.len(), 8192);
        assert!(writes[1..]
            .iter()
            .all(|w| w.time == 99 && w.data.iter().all(|b| *b == 0)));
        assert_eq!(writes[3].offset, 2 << 20);
        // Truncated data, truncated header, unknown flags, empty batch.
        assert!(decode_writes(Bytes::from(wire[..wire.len() - 33].to_vec()), 0, 64 << 20).is_err());
        assert!(decode_writes(Bytes::from(wire[..20].to_vec()), 0, 64 << 20).is_err());
        let mut bad = wire.clone();
        bad[4] = 2;
        assert!(decode_writes(Bytes::from(bad), 0, 64 << 20).is_err());
        assert!(decode_writes(Bytes::new(), 0, 64 << 20).is_err());
        let future = encode_writes([(0, 0, WireData::Bytes(&data), 400_000_000_000)]);
        assert!(decode_writes(Bytes::from(future), 1, 64 << 20).is_err());
        // Huge lengths are refused before anything is allocated.
        let huge = encode_writes([(0, 0, WireData::Bytes(&data), 0)]);
        let mut huge = huge[..WIRE_HEADER_BYTES].to_vec();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_writes(Bytes::from(huge), 0, 64 << 20).is_err());
        let zeros = encode_writes([(0, 0, WireData::Zero(u64::MAX - 4095), 0)]);
        let e = decode_writes(Bytes::from(zeros), 0, 64 << 20).expect_err("too large");
        assert_eq!(e.status.as_u16(), 413);
    }
}
