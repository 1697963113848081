//! Is the container whole? A structural check of MP4/MOV (ISO base media) and MXF files, one
//! of the signals that must agree before a file is queued.
//!
//! A stable size and mtime only say that nobody wrote for a while; a render that stalls, or a
//! copy that paused, leaves a file that looks still but is cut short. The container's own
//! structure says whether its writer finished:
//!
//! - **ISO base media** (`.mp4 .mov .qt .m4v .3gp .3g2`): the file is a chain of top-level boxes,
//!   each starting with its size. The sizes must chain exactly to the end of the file, and a
//!   `moov` box (the index: where every frame is) must be among them. A writer streams the
//!   frames into `mdat` and writes `moov` last (or rewrites the file with `moov` first): without
//!   it the video cannot play. A box that runs past the end of the file is still being written;
//!   size 0 means "to the end of the file", which is what a writer leaves as a placeholder until
//!   it knows the size, so it is accepted only after `moov` was already seen. Old QuickTime
//!   files may start with `wide`, `free`, `skip`, `mdat` or `moov` (or a `pnot` preview)
//!   instead of `ftyp`.
//! - **Fragmented MP4** (`moof` boxes: each fragment has its own little index): after every
//!   fragment the file is a valid, playable movie. A writer that ends it with the fragment
//!   index (`mfra`, closed by an `mfro` box giving its size; ffmpeg does) marks the end: that
//!   file is complete, found from its last 16 bytes without walking every fragment. Without
//!   one the file cannot prove it is finished: the verdict says so
//!   ([`ContainerVerdict::Unprovable`]) and the other signals (stable for `stable_for`, nobody
//!   writing it) decide alone; a fragment cut short within the first [`MAX_BOXES`] boxes is
//!   still seen as incomplete, later ones are not (the rule says how far it checked).
//! - **MXF** (SMPTE 377): the file opens with a header partition pack (after a run-in of at
//!   most 64 KiB) and a finished file ends with a *closed* footer partition, usually followed by
//!   a Random Index Pack (RIP) that lists every partition and whose own length is the file's
//!   last four bytes. The footer is found through the RIP, or else through the footer offset in
//!   the header partition pack (a streaming writer leaves 0 there), and must lie wholly within
//!   the file. A writer writes the footer and the RIP last, so a file being written has none.
//!
//! Only headers are read, never the payload, with positioned reads on the handle the caller
//! opened (so the size it took with `fstat` and the bytes read belong to the same file, even on
//! a network share that caches attributes): an ISO file costs one read per top-level box that
//! is not in the first few KiB (typically two reads in all), an MXF file three or four,
//! whatever the size. A 200 GB export is checked as fast as a small one, and a share is not
//! asked for gigabytes. Walking the boxes of a fragmented file (two per fragment) stops after
//! [`MAX_BOXES`] and says so.
//!
//! A file whose name says MP4/MOV/MXF but which is not that container at all (garbage, or
//! another format renamed) is [`ContainerVerdict::NotThisContainer`]: waiting longer cannot
//! help, so it fails at once with that reason.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::config::human_size;

/// Top-level boxes walked in an ISO file before the check stops and says so. A plain export
/// has a handful; only a fragmented one has more (two per fragment), and it cannot prove it is
/// finished anyway.
pub const MAX_BOXES: u32 = 1000;

/// How much one read asks for: enough for the small boxes at the start of a file (`ftyp`,
/// `free`, `wide` and the `mdat` header), a partition pack or a RIP, in a single read.
const WINDOW: u64 = 4096;

/// How far into an MXF file its header partition may start (SMPTE 377: the run-in is at most
/// 64 KiB).
const MXF_RUN_IN_MAX: u64 = 64 * 1024;

/// The first 13 bytes of every MXF partition pack key; byte 13 says which partition (2 header,
/// 3 body, 4 footer), byte 14 its status (1 open incomplete, 2 closed incomplete, 3 open
/// complete, 4 closed complete).
const MXF_PARTITION: [u8; 13] = [
    0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01,
];
const MXF_HEADER: u8 = 0x02;
const MXF_FOOTER: u8 = 0x04;

/// The Random Index Pack's key.
const MXF_RIP: [u8; 16] = [
    0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01, 0x11, 0x01, 0x00,
];

/// The fixed part of a partition pack's value, up to and including IndexByteCount.
const MXF_PACK_FIELDS: u64 = 48;

/// Box types an ISO file may start with: `ftyp` (every MP4 and most MOV files), and what old
/// QuickTime files begin with.
const ISO_FIRST_BOXES: [&[u8; 4]; 7] = [
    b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov", b"pnot",
];

/// Which container a file's name says it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ContainerKind {
    /// ISO base media: MP4, M4V, 3GP, 3G2 and QuickTime MOV. `quicktime` when the name ends in
    /// `.mov` or `.qt`: the summary says "MOV" when no `ftyp` brand says otherwise.
    IsoBmff { quicktime: bool },
    /// SMPTE 377 Material Exchange Format.
    Mxf,
}

impl ContainerKind {
    /// The container a file name's suffix (any case) promises; `None` for every other name,
    /// whose container is not checked.
    pub fn for_name(name: &OsStr) -> Option<ContainerKind> {
        let suffix = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
        match suffix.as_str() {
            "mp4" | "m4v" | "3gp" | "3g2" => Some(ContainerKind::IsoBmff { quicktime: false }),
            "mov" | "qt" => Some(ContainerKind::IsoBmff { quicktime: true }),
            "mxf" => Some(ContainerKind::Mxf),
            _ => None,
        }
    }
}

/// What the structure of a file says about its writer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ContainerVerdict {
    /// Whole: the text for the rule that released it, e.g. "MP4 complete (moov after mdat)".
    Complete { summary: String },
    /// Valid so far, but the format cannot say whether more is coming (fragmented MP4): the
    /// other signals decide, and the rule says so.
    Unprovable { summary: String },
    /// Not finished, or cut short: what is missing, e.g. "no moov box: the export never
    /// finished". Waiting may help; after `incomplete_after` it is a failure with this reason.
    Incomplete { missing: String },
    /// The name promises a container that the bytes are not: waiting cannot help.
    NotThisContainer { why: String },
}

impl ContainerVerdict {
    /// Whether this signal lets the file be queued (complete, or the format cannot tell).
    pub fn lets_through(&self) -> bool {
        matches!(
            self,
            ContainerVerdict::Complete { .. } | ContainerVerdict::Unprovable { .. }
        )
    }
}

impl fmt::Display for ContainerVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerVerdict::Complete { summary } | ContainerVerdict::Unprovable { summary } => {
                summary
            }
            ContainerVerdict::Incomplete { missing } => missing,
            ContainerVerdict::NotThisContainer { why } => why,
        })
    }
}

/// A verdict and what it cost, so the claim "headers only" can be checked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ContainerCheck {
    pub verdict: ContainerVerdict,
    /// Positioned reads made.
    pub reads: u32,
    pub bytes_read: u64,
}

/// Checks the structure of `file`, `len` bytes long, as a `kind` container.
///
/// `file` is a handle the caller opened (without following links) and `len` the size its
/// `fstat` gave; only positioned reads are made, so the handle's offset does not matter. A file
/// that gets shorter while it is read is `Incomplete`; other read errors are returned.
/// Blocking: call it off the async threads.
pub fn check(file: &File, len: u64, kind: ContainerKind) -> io::Result<ContainerCheck> {
    let mut reader = Reader::new(file, len);
    // A writer that reserved the file's space first (posix_fallocate, an SMB client
    // preallocating) leaves zeros where the first box or partition will be: not finished, not
    // another format.
    if len > 0 {
        let head = reader.get(0, len.min(64))?;
        if head.iter().all(|&b| b == 0) {
            return Ok(ContainerCheck {
                verdict: ContainerVerdict::Incomplete {
                    missing: "the file starts with zeros: its space is reserved but nothing is written yet".into(),
                },
                reads: reader.reads,
                bytes_read: reader.bytes_read,
            });
        }
    }
    let verdict = match kind {
        ContainerKind::IsoBmff { quicktime } => check_iso(&mut reader, quicktime),
        ContainerKind::Mxf => check_mxf(&mut reader),
    };
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => ContainerVerdict::Incomplete {
            missing: "the file got shorter while it was checked: it is still being written".into(),
        },
        Err(err) => return Err(err),
    };
    Ok(ContainerCheck {
        verdict,
        reads: reader.reads,
        bytes_read: reader.bytes_read,
    })
}

/// A fragmented file that ends with its fragment index (`mfra`, found through the `mfro` box
/// that closes it and gives its size) was finished by its writer: ffmpeg and most recorders
/// write it last. Without one, `None`: the file cannot prove it is finished.
fn fragments_indexed(r: &mut Reader<'_>, format: &str) -> io::Result<Option<ContainerVerdict>> {
    let len = r.len;
    if len < 16 + 8 {
        return Ok(None);
    }
    let tail = r.get(len - 16, 16)?.to_vec();
    let mfro_ok = tail[0..4] == 16u32.to_be_bytes() && &tail[4..8] == b"mfro";
    if !mfro_ok {
        return Ok(None);
    }
    let mfra_size = u64::from(u32::from_be_bytes([tail[12], tail[13], tail[14], tail[15]]));
    if mfra_size < 8 + 16 || mfra_size > len {
        return Ok(None);
    }
    let head = r.get(len - mfra_size, 8)?.to_vec();
    let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
    if size != mfra_size || &head[4..8] != b"mfra" {
        return Ok(None);
    }
    Ok(Some(ContainerVerdict::Complete {
        summary: format!("fragmented {format} complete (fragment index mfra at the end)"),
    }))
}

/// Positioned reads through a small window, counted.
struct Reader<'a> {
    file: &'a File,
    len: u64,
    window_at: u64,
    window: Vec<u8>,
    reads: u32,
    bytes_read: u64,
}

impl<'a> Reader<'a> {
    fn new(file: &'a File, len: u64) -> Reader<'a> {
        Reader {
            file,
            len,
            window_at: 0,
            window: Vec::new(),
            reads: 0,
            bytes_read: 0,
        }
    }

    /// The `n` bytes at `at`, which the caller made sure lie within `len`. Served from the last
    /// read when it holds them; otherwise one read of at least [`WINDOW`] bytes from `at`.
    fn get(&mut self, at: u64, n: u64) -> io::Result<&[u8]> {
        let end = at.saturating_add(n);
        let window_end = self.window_at + self.window.len() as u64;
        if at < self.window_at || end > window_end {
            let want = n.max(WINDOW).min(self.len.saturating_sub(at)).max(n);
            self.load(at, want)?;
        }
        let from = usize::try_from(at - self.window_at).map_err(io::Error::other)?;
        let to = usize::try_from(end - self.window_at).map_err(io::Error::other)?;
        Ok(&self.window[from..to])
    }

    /// Reads the last [`WINDOW`] bytes (or the whole file when it is smaller), so the end of an
    /// MXF file (its RIP, usually) costs one read.
    fn load_tail(&mut self) -> io::Result<()> {
        let start = self.len.saturating_sub(WINDOW);
        self.load(start, self.len - start)
    }

    fn load(&mut self, at: u64, n: u64) -> io::Result<()> {
        let n = usize::try_from(n).map_err(io::Error::other)?;
        self.window.clear();
        self.window.resize(n, 0);
        self.window_at = at;
        self.reads += 1;
        let mut filled = 0;
        while filled < n {
            match self
                .file
                .read_at(&mut self.window[filled..], at + filled as u64)
            {
                // The file is shorter than `len` now: the caller turns this into "incomplete".
                Ok(0) => {
                    self.window.truncate(filled);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(got) => {
                    filled += got;
                    self.bytes_read += got as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.window.truncate(filled);
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

fn incomplete(missing: impl Into<String>) -> ContainerVerdict {
    ContainerVerdict::Incomplete {
        missing: missing.into(),
    }
}

// ---- ISO base media (MP4, MOV) ----

fn not_iso() -> ContainerVerdict {
    ContainerVerdict::NotThisContainer {
        why: "not an MP4/MOV file: no valid first box".into(),
    }
}

/// What to call the file in the summary: the `ftyp` major brand says, or else the name.
fn iso_format(brand: Option<[u8; 4]>, quicktime: bool) -> &'static str {
    match brand {
        Some(brand) if &brand == b"qt  " => "MOV",
        Some(brand) if brand.starts_with(b"3g") => "3GP",
        Some(_) => "MP4",
        None if quicktime => "MOV",
        None => "MP4",
    }
}

fn check_iso(r: &mut Reader<'_>, quicktime: bool) -> io::Result<ContainerVerdict> {
    let len = r.len;
    if len == 0 {
        return Ok(incomplete("the file is empty: nothing written yet"));
    }
    let mut at = 0u64;
    let mut boxes = 0u32;
    let mut brand = None;
    let mut moov_at = None;
    let mut mdat_at = None;
    let mut fragmented = false;
    while at < len {
        let first = boxes == 0;
        let format = iso_format(brand, quicktime);
        if boxes == MAX_BOXES {
            if fragmented && let Some(verdict) = fragments_indexed(r, format)? {
                return Ok(verdict);
            }
            return Ok(ContainerVerdict::Unprovable {
                summary: if fragmented {
                    format!(
                        "fragmented {format}: the container cannot prove it is finished (the first {MAX_BOXES} boxes checked)"
                    )
                } else {
                    format!(
                        "{format} with more than {MAX_BOXES} top-level boxes: the container was not checked to the end"
                    )
                },
            });
        }
        let left = len - at;
        let mut head = [0u8; 16];
        let got = left.min(16);
        head[..got as usize].copy_from_slice(r.get(at, got)?);
        let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
        let printable = kind.iter().all(|b| (0x20..=0x7e).contains(b));
        if left < 8 {
            // A first header cut short is judged on what there is: a type already present
            // must still be one a file starts with.
            return Ok(
                if first
                    && left > 4
                    && !ISO_FIRST_BOXES
                        .iter()
                        .any(|t| t.starts_with(&head[4..left as usize]))
                {
                    not_iso()
                } else {
                    incomplete(format!(
                        "the file ends {left} bytes into a box header at byte {at}: still being written or cut short"
                    ))
                },
            );
        }
        if first && !ISO_FIRST_BOXES.contains(&&kind) {
            return Ok(not_iso());
        }
        let damaged = |why: &str| {
            incomplete(format!(
                "damaged {format}: the box at byte {at} {why}; it may still be being written"
            ))
        };
        if !printable {
            return Ok(damaged("has no valid type"));
        }
        let name = String::from_utf8_lossy(&kind).into_owned();
        let size32 = be_u32(&head);
        let size = match size32 {
            0 => None,
            1 => {
                if left < 16 {
                    return Ok(incomplete(format!(
                        "the file ends inside the header of the {name} box at byte {at}: still being written or cut short"
                    )));
                }
                let large = be_u64(&head[8..]);
                if large < 16 {
                    return Ok(if first {
                        not_iso()
                    } else {
                        damaged(&format!("({name}) has an impossible size ({large} bytes)"))
                    });
                }
                Some(large)
            }
            n if n < 8 => {
                return Ok(if first {
                    not_iso()
                } else {
                    damaged(&format!("({name}) has an impossible size ({n} bytes)"))
                });
            }
            n => Some(u64::from(n)),
        };
        if &kind == b"ftyp" && brand.is_none() && left >= 12 && size.is_none_or(|s| s >= 12) {
            brand = Some([head[8], head[9], head[10], head[11]]);
        }
        match &kind {
            b"moov" => {
                moov_at.get_or_insert(at);
            }
            b"mdat" => {
                mdat_at.get_or_insert(at);
            }
            b"moof" => fragmented = true,
            _ => {}
        }
        boxes += 1;
        match size {
            // "To the end of the file": a finished writer may leave its last box so, but a
            // writer still streaming frames leaves the same placeholder in front of them.
            None if moov_at.is_some_and(|moov| moov < at) => at = len,
            None if &kind == b"mdat" => {
                return Ok(incomplete(
                    "mdat size not written yet: the export never finished",
                ));
            }
            None => {
                return Ok(incomplete(format!(
                    "the size of the {name} box is not written yet: the export never finished"
                )));
            }
            Some(size) if size > left => {
                return Ok(incomplete(format!(
                    "the {name} box claims {} but the file ends after {} of it: still being written or cut short",
                    human_size(size),
                    human_size(left)
                )));
            }
            Some(size) => at += size,
        }
    }
    let format = iso_format(brand, quicktime);
    let Some(moov) = moov_at else {
        return Ok(incomplete("no moov box: the export never finished"));
    };
    if fragmented {
        if let Some(verdict) = fragments_indexed(r, iso_format(brand, quicktime))? {
            return Ok(verdict);
        }
        return Ok(ContainerVerdict::Unprovable {
            summary: format!("fragmented {format}: the container cannot prove it is finished"),
        });
    }
    // An index with no frames: a copy cut short right after a `moov` that comes first, or a
    // reference movie whose media lie in other files (useless uploaded alone).
    let Some(mdat) = mdat_at else {
        return Ok(incomplete(
            "no mdat box: the file holds no frames (cut short after its index?)",
        ));
    };
    let order = if mdat < moov {
        "moov after mdat"
    } else {
        "moov before mdat"
    };
    Ok(ContainerVerdict::Complete {
        summary: format!("{format} complete ({order})"),
    })
}

// ---- MXF ----

fn not_mxf() -> ContainerVerdict {
    ContainerVerdict::NotThisContainer {
        why: "not an MXF file: no header partition at its start".into(),
    }
}

fn no_footer() -> ContainerVerdict {
    incomplete("MXF has no closed footer partition: the export never finished")
}

/// A BER-coded length at the start of `bytes`: (bytes it takes, the length). `None` when it is
/// not one MXF allows, or `bytes` ends inside it.
fn ber_length(bytes: &[u8]) -> Option<(u64, u64)> {
    let first = *bytes.first()?;
    if first < 0x80 {
        return Some((1, u64::from(first)));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 8 || bytes.len() < 1 + count {
        return None;
    }
    let value = bytes[1..=count]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Some((1 + count as u64, value))
}

/// Where the header partition pack starts (after the run-in), or `None` when there is none.
fn mxf_header_at(r: &mut Reader<'_>) -> io::Result<Option<u64>> {
    let len = r.len;
    let mut key = MXF_PARTITION.to_vec();
    key.push(MXF_HEADER);
    let start = r.get(0, len.min(key.len() as u64))?;
    if start.starts_with(&key) {
        return Ok(Some(0));
    }
    let scan = r.get(0, len.min(MXF_RUN_IN_MAX + key.len() as u64))?;
    Ok(scan
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .map(|p| p as u64))
}

/// What the end of the file says about the footer.
enum RipFinding {
    /// The RIP's last entry: the footer partition's offset (from the header partition), and
    /// where the RIP starts.
    Footer {
        offset: u64,
        rip_at: u64,
    },
    Absent,
    Damaged(String),
}

fn find_rip(r: &mut Reader<'_>, header_at: u64) -> io::Result<RipFinding> {
    let len = r.len;
    // Key, a one-byte length, one entry and the overall length.
    const SMALLEST: u64 = 16 + 1 + 12 + 4;
    if len - header_at < SMALLEST {
        return Ok(RipFinding::Absent);
    }
    r.load_tail()?;
    let overall = u64::from(be_u32(r.get(len - 4, 4)?));
    if overall < SMALLEST || overall > len - header_at {
        return Ok(RipFinding::Absent);
    }
    let rip_at = len - overall;
    if r.get(rip_at, 16)? != MXF_RIP {
        return Ok(RipFinding::Absent);
    }
    let damaged = || {
        RipFinding::Damaged(format!(
            "damaged MXF: the Random Index Pack at byte {rip_at} does not add up"
        ))
    };
    let ber_bytes = (overall - 16).min(9);
    let Some((ber, value)) = ber_length(r.get(rip_at + 16, ber_bytes)?) else {
        return Ok(damaged());
    };
    if 16 + ber + value != overall || value < 4 + 12 || (value - 4) % 12 != 0 {
        return Ok(damaged());
    }
    let last_entry = len - 4 - 12;
    let offset = be_u64(&r.get(last_entry, 12)?[4..]);
    Ok(RipFinding::Footer { offset, rip_at })
}

fn check_mxf(r: &mut Reader<'_>) -> io::Result<ContainerVerdict> {
    let len = r.len;
    if len == 0 {
        return Ok(incomplete("the file is empty: nothing written yet"));
    }
    let Some(header_at) = mxf_header_at(r)? else {
        // A file shorter than one key that starts like one is still being written.
        let mut key = MXF_PARTITION.to_vec();
        key.push(MXF_HEADER);
        if len < key.len() as u64 && key.starts_with(r.get(0, len)?) {
            return Ok(incomplete(
                "the file ends inside the MXF header partition: still being written or cut short",
            ));
        }
        return Ok(not_mxf());
    };
    let cut_in_header = || {
        incomplete(
            "the file ends inside the MXF header partition: still being written or cut short",
        )
    };
    let fields_at = header_at + 16;
    if len < fields_at + 9 {
        return Ok(cut_in_header());
    }
    let Some((ber, value)) = ber_length(r.get(fields_at, (len - fields_at).min(9))?) else {
        return Ok(ContainerVerdict::NotThisContainer {
            why: "not an MXF file: its header partition pack has no valid length".into(),
        });
    };
    if value < MXF_PACK_FIELDS {
        return Ok(ContainerVerdict::NotThisContainer {
            why: format!("not an MXF file: its header partition pack is too short ({value} bytes)"),
        });
    }
    let values_at = fields_at + ber;
    if len - values_at < MXF_PACK_FIELDS {
        return Ok(cut_in_header());
    }
    let footer_in_header = be_u64(&r.get(values_at, MXF_PACK_FIELDS)?[24..]);

    let (offset, via_rip, limit) = match find_rip(r, header_at)? {
        RipFinding::Footer { offset, rip_at } => (offset, true, rip_at),
        RipFinding::Damaged(why) => return Ok(incomplete(why)),
        // A streaming writer cannot know where the footer will be: only the RIP says.
        RipFinding::Absent if footer_in_header == 0 => return Ok(no_footer()),
        RipFinding::Absent => (footer_in_header, false, len),
    };
    let source = if via_rip {
        "the Random Index Pack"
    } else {
        "the header partition"
    };
    let Some(footer_at) = header_at.checked_add(offset) else {
        return Ok(incomplete(format!(
            "damaged MXF: {source} puts the footer partition at an impossible offset"
        )));
    };
    // The last partition the RIP lists is the header itself: there is no footer.
    if offset == 0 {
        return Ok(no_footer());
    }
    if footer_at < header_at + 16 {
        return Ok(incomplete(format!(
            "damaged MXF: {source} puts the footer partition inside the header (offset {offset})"
        )));
    }
    if footer_at >= limit || limit - footer_at < 16 + 9 {
        return Ok(incomplete(format!(
            "{source} puts the MXF footer partition at byte {footer_at} but the file ends after {}: still being written or cut short",
            human_size(len)
        )));
    }
    let key = r.get(footer_at, 16)?.to_vec();
    if !key.starts_with(&MXF_PARTITION) || key[13] != MXF_FOOTER {
        return Ok(if via_rip && key.starts_with(&MXF_PARTITION) {
            no_footer()
        } else {
            incomplete(format!(
                "damaged MXF: no footer partition at byte {footer_at}, where {source} puts it"
            ))
        });
    }
    match key[14] {
        0x02 | 0x04 => {}
        0x01 | 0x03 => {
            return Ok(incomplete(
                "the MXF footer partition is still open: the export was not finalised",
            ));
        }
        status => {
            return Ok(incomplete(format!(
                "damaged MXF: the footer partition at byte {footer_at} has an unknown status ({status})"
            )));
        }
    }
    let Some((ber, value)) = ber_length(r.get(footer_at + 16, 9)?) else {
        return Ok(incomplete(format!(
            "damaged MXF: the footer partition at byte {footer_at} has no valid length"
        )));
    };
    let pack_end = footer_at + 16 + ber;
    if value < MXF_PACK_FIELDS || value > limit - pack_end {
        return Ok(incomplete(format!(
            "the MXF footer partition at byte {footer_at} is cut short: still being written"
        )));
    }
    let fields = r.get(pack_end, MXF_PACK_FIELDS)?.to_vec();
    let this_partition = be_u64(&fields[8..]);
    if this_partition != offset {
        return Ok(incomplete(format!(
            "damaged MXF: the footer partition at byte {footer_at} says it is at offset {this_partition}"
        )));
    }
    // Header metadata and index segments may follow the footer pack; they must fit too.
    let metadata = be_u64(&fields[32..]).saturating_add(be_u64(&fields[40..]));
    let extent_end = (pack_end + value).saturating_add(metadata);
    if extent_end > limit {
        return Ok(incomplete(format!(
            "the MXF footer partition claims {} of metadata and index but the file ends before: still being written or cut short",
            human_size(metadata)
        )));
    }
    if !via_rip && extent_end < len {
        // No RIP was found: bytes after the footer that begin like one are a RIP cut short.
        let rest = (len - extent_end).min(16);
        if MXF_RIP.starts_with(r.get(extent_end, rest)?) {
            return Ok(incomplete(
                "the MXF Random Index Pack at the end is cut short: still being written",
            ));
        }
    }
    Ok(ContainerVerdict::Complete {
        summary: "MXF complete (closed footer partition)".into(),
    })
}

#[cfg(test)]
mod tests;
