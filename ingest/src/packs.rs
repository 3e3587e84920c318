//! The last stage of packing (see `packer.rs`): appends the frames of named windows to
//! packs, seals each pack once full (which hashes it whole) and hands it to the
//! uploader, then gives the window back to the builder.

use std::sync::mpsc::{Receiver, Sender};

use tidemark_format::{PackId, PackWriter, PACK_FOOTER_LEN};
use tidemark_pitr_index::{ChunkLocation, PackInfo};

use crate::compress::codec_of;
use crate::packer::{Fresh, Named, Packed, Reply};
use crate::uploader::PackSink;
use crate::Result;

pub(crate) struct PackFiller {
    pack_bytes: usize,
    sink: PackSink,
    pack: Option<PackWriter>,
    out: Packed,
}

impl PackFiller {
    /// Packs of at most `pack_bytes` (and 64 MiB) of frames, sent to `sink`.
    pub fn new(pack_bytes: usize, sink: PackSink) -> Self {
        PackFiller {
            pack_bytes: pack_bytes.min(64 << 20),
            sink,
            pack: None,
            out: Packed::default(),
        }
    }

    /// Packs windows until `Finish`, or until the naming stage hangs up without it
    /// (something failed: the open pack is then dropped, never stored).
    pub fn run(mut self, named: Receiver<Named>, replies: Sender<Result<Reply>>) {
        for next in named {
            let reply = match next {
                Named::Window { data, refs, fresh } => self
                    .add(&data, fresh)
                    .map(|()| Reply::Packed { refs, data }),
                Named::Finish => self
                    .flush()
                    .map(|()| Reply::Finished(std::mem::take(&mut self.out))),
            };
            let failed = reply.is_err();
            if replies.send(reply).is_err() || failed {
                return;
            }
        }
    }

    /// Appends the chunks of `fresh`, cut from `buf`, to packs.
    fn add(&mut self, buf: &[u8], fresh: Vec<Fresh>) -> Result<()> {
        for f in fresh {
            let raw = &buf[f.cut.clone()];
            let bytes = f.frame.as_deref().unwrap_or(raw);
            let full = self
                .pack
                .as_ref()
                .is_some_and(|p| !p.is_empty() && p.len() + bytes.len() > self.pack_bytes);
            if full {
                self.flush()?;
            }
            let (sink, pack_bytes) = (&self.sink, self.pack_bytes);
            let pack = self.pack.get_or_insert_with(|| {
                PackWriter::in_buffer(PackId(rand::random()), sink.spare(), pack_bytes)
            });
            let e = pack.push(f.hash, raw.len() as u32, codec_of(&f.frame), bytes);
            self.out.new_chunks.push((
                f.hash,
                ChunkLocation {
                    pack: pack.id(),
                    offset: e.offset,
                    clen: e.clen,
                    ulen: e.ulen,
                    codec: e.codec,
                },
            ));
        }
        Ok(())
    }

    /// Seals the open pack, if any, and hands it to the uploader.
    fn flush(&mut self) -> Result<()> {
        if let Some(pack) = self.pack.take() {
            let id = pack.id();
            let frames_len = pack.len();
            let (bytes, entries) = pack.finish();
            let info = PackInfo {
                size: bytes.len() as u64,
                tail_len: (bytes.len() - frames_len) as u64,
                chunks: entries.len() as u32,
            };
            debug_assert!(info.tail_len >= PACK_FOOTER_LEN as u64);
            self.out.packs.push((id, info));
            self.sink.submit(id, bytes)?;
        }
        Ok(())
    }
}
