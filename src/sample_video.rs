//! Video files that pass the container check, generated: for the tests, the soak, `demo`, and
//! anyone who needs a "finished export" of an exact size.
//!
//! Since the agent checks that an MP4/MOV/MXF container is whole before queueing it (see
//! `ready::container`), a `.mov` full of random bytes is no longer an export: it fails at once.
//! [`SampleVideo`] writes a valid container of exactly the requested size around a seeded
//! pseudo-random payload, chosen by the file's suffix:
//!
//! - `.mp4 .m4v .3gp .3g2 .mov .qt`: `ftyp`, one `mdat` holding the payload (with a 64-bit size
//!   once it passes 4 GiB), and a minimal `moov` (a movie header) at the end;
//! - `.mxf`: a header partition, the payload as one essence element, a closed footer partition
//!   and the Random Index Pack that points at it;
//! - anything else: the payload alone.
//!
//! The bytes come out in pieces ([`SampleVideo::pieces`]), so a 10 GiB file needs no 10 GiB
//! buffer, and a writer may pause between pieces like a render in progress. The structure is
//! only whole once the last piece is written: the `moov` (MP4/MOV) and the RIP (MXF) come last,
//! and the MXF header leaves the footer's offset at 0 as a streaming writer does, so the file
//! cut anywhere short of its end is incomplete.
//!
//! [`ColourBars`] is `demo`'s sample: a real QuickTime movie with an uncompressed RGB track of
//! colour bars that any player (and `ffmpeg`) decodes, written the same way.

use std::io::{self, Write};
use std::path::Path;

/// What a sample's name asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SampleFormat {
    /// ISO base media with this `ftyp` major brand (`qt  ` for QuickTime).
    IsoBmff {
        brand: [u8; 4],
    },
    Mxf,
    /// Not a container the agent checks: the payload alone.
    Plain,
}

impl SampleFormat {
    /// The format a file name's suffix (any case) asks for.
    pub fn for_path(path: &Path) -> SampleFormat {
        let suffix = path
            .extension()
            .and_then(|s| s.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match suffix.as_str() {
            "mp4" => SampleFormat::IsoBmff { brand: *b"isom" },
            "m4v" => SampleFormat::IsoBmff { brand: *b"M4V " },
            "3gp" => SampleFormat::IsoBmff { brand: *b"3gp4" },
            "3g2" => SampleFormat::IsoBmff { brand: *b"3g2a" },
            "mov" | "qt" => SampleFormat::IsoBmff { brand: *b"qt  " },
            "mxf" => SampleFormat::Mxf,
            _ => SampleFormat::Plain,
        }
    }

    /// The smallest sample of this format: its structure with an empty payload.
    pub fn smallest(self) -> u64 {
        Layout::new(self, 0, false).len()
    }

    fn name(self) -> &'static str {
        match self {
            SampleFormat::IsoBmff { brand } if &brand == b"qt  " => "MOV",
            SampleFormat::IsoBmff { .. } => "MP4",
            SampleFormat::Mxf => "MXF",
            SampleFormat::Plain => "plain",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("an {format} sample needs at least {smallest} bytes, not {size}")]
    TooSmall {
        format: &'static str,
        smallest: u64,
        size: u64,
    },
}

/// A generated export: `size` bytes in `format`, the payload drawn from `seed`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SampleVideo {
    format: SampleFormat,
    size: u64,
    seed: u64,
}

impl SampleVideo {
    pub fn new(format: SampleFormat, size: u64, seed: u64) -> Result<SampleVideo, SampleError> {
        let smallest = format.smallest();
        if size < smallest {
            return Err(SampleError::TooSmall {
                format: format.name(),
                smallest,
                size,
            });
        }
        Ok(SampleVideo { format, size, seed })
    }

    /// A sample in the format `path`'s suffix asks for.
    pub fn for_path(path: &Path, size: u64, seed: u64) -> Result<SampleVideo, SampleError> {
        SampleVideo::new(SampleFormat::for_path(path), size, seed)
    }

    pub fn format(&self) -> SampleFormat {
        self.format
    }

    /// Its size in bytes, exactly as asked.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The file's bytes in order, `piece_len` at a time (the last piece may be shorter).
    pub fn pieces(&self, piece_len: usize) -> Pieces {
        let mut payload = self.size - self.format.smallest();
        let mut layout = Layout::new(self.format, payload, false);
        // Past 4 GiB the mdat header takes 8 more bytes (a 64-bit size) from the payload.
        if matches!(self.format, SampleFormat::IsoBmff { .. }) && mdat_is_large(payload) {
            payload -= 8;
            layout = Layout::new(self.format, payload, true);
        }
        debug_assert_eq!(layout.len() + payload, self.size);
        Pieces::new(
            layout.head,
            Body::Noise(Noise::new(self.seed)),
            payload,
            layout.tail,
            piece_len,
        )
    }

    /// Writes the whole file to `out` in 1 MiB pieces.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for piece in self.pieces(1 << 20) {
            out.write_all(&piece)?;
        }
        Ok(())
    }

    /// The whole file in memory (for small samples).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces(1 << 20).flatten().collect()
    }
}

/// The structure around a payload of `payload` bytes: what comes before and after it.
struct Layout {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Layout {
    /// Bytes of structure, without the payload.
    fn len(&self) -> u64 {
        self.head.len() as u64 + self.tail.len() as u64
    }

    /// `large`: the `mdat` gets a 64-bit size.
    fn new(format: SampleFormat, payload: u64, large: bool) -> Layout {
        match format {
            SampleFormat::IsoBmff { brand } => {
                let mut head = ftyp(brand);
                head.extend(mdat_header(payload, large));
                let tail = boxed(b"moov", &mvhd(1000, 0));
                Layout { head, tail }
            }
            SampleFormat::Mxf => mxf_layout(payload),
            SampleFormat::Plain => Layout {
                head: Vec::new(),
                tail: Vec::new(),
            },
        }
    }
}

/// The bytes of one generated file in order: `head`, `body_len` bytes of body, `tail`.
pub struct Pieces {
    head: Vec<u8>,
    body: Body,
    body_len: u64,
    tail: Vec<u8>,
    piece_len: usize,
    /// Bytes handed out so far.
    at: u64,
}

impl Pieces {
    fn new(head: Vec<u8>, body: Body, body_len: u64, tail: Vec<u8>, piece_len: usize) -> Pieces {
        Pieces {
            head,
            body,
            body_len,
            tail,
            piece_len: piece_len.max(1),
            at: 0,
        }
    }

    fn total(&self) -> u64 {
        self.head.len() as u64 + self.body_len + self.tail.len() as u64
    }
}

impl Iterator for Pieces {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let total = self.total();
        if self.at >= total {
            return None;
        }
        let want = (total - self.at).min(self.piece_len as u64) as usize;
        let mut piece = Vec::with_capacity(want);
        let head_len = self.head.len() as u64;
        let body_end = head_len + self.body_len;
        while piece.len() < want {
            let room = (want - piece.len()) as u64;
            if self.at < head_len {
                let from = self.at as usize;
                let to = (self.at + room).min(head_len) as usize;
                piece.extend_from_slice(&self.head[from..to]);
                self.at = to as u64;
            } else if self.at < body_end {
                let n = room.min(body_end - self.at);
                self.body.fill(self.at - head_len, n as usize, &mut piece);
                self.at += n;
            } else {
                let from = (self.at - body_end) as usize;
                let to = from + room as usize;
                piece.extend_from_slice(&self.tail[from..to]);
                self.at += room;
            }
        }
        Some(piece)
    }
}

/// Where a file's body comes from.
enum Body {
    Noise(Noise),
    Frames(FrameSource),
}

impl Body {
    /// Appends the `n` body bytes that start `at` bytes into the body (always asked in order).
    fn fill(&mut self, at: u64, n: usize, out: &mut Vec<u8>) {
        match self {
            Body::Noise(noise) => noise.fill(n, out),
            Body::Frames(frames) => frames.fill(at, n, out),
        }
    }
}

/// Seeded xorshift bytes: reproducible, and not compressible, like encoded video.
struct Noise {
    state: u64,
    spare: [u8; 8],
    spare_left: usize,
}

impl Noise {
    fn new(seed: u64) -> Noise {
        Noise {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            spare: [0; 8],
            spare_left: 0,
        }
    }

    fn fill(&mut self, mut n: usize, out: &mut Vec<u8>) {
        while n > 0 {
            if self.spare_left == 0 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.spare = self.state.to_le_bytes();
                self.spare_left = 8;
            }
            let take = n.min(self.spare_left);
            let from = 8 - self.spare_left;
            out.extend_from_slice(&self.spare[from..from + take]);
            self.spare_left -= take;
            n -= take;
        }
    }
}

// ---- ISO base media boxes ----

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    // Every box built here is small (a movie header, a sample table): mdat has its own header.
    out.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// A box with a version and flags before its body.
fn full_box(kind: &[u8; 4], flags: u32, body: &[u8]) -> Vec<u8> {
    let mut inner = flags.to_be_bytes().to_vec();
    inner.extend_from_slice(body);
    boxed(kind, &inner)
}

fn ftyp(brand: [u8; 4]) -> Vec<u8> {
    let mut body = brand.to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&brand);
    boxed(b"ftyp", &body)
}

/// The header of an `mdat` holding `payload` bytes: with a 64-bit size when `large` or when
/// 32 bits are too few.
fn mdat_header(payload: u64, large: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    match u32::try_from(payload + 8) {
        Ok(size) if !large => {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(b"mdat");
        }
        _ => {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(b"mdat");
            out.extend_from_slice(&(payload + 16).to_be_bytes());
        }
    }
    out
}

/// Whether an `mdat` of `payload` bytes needs a 64-bit size.
fn mdat_is_large(payload: u64) -> bool {
    payload + 8 > u64::from(u32::MAX)
}

/// The identity matrix of movie and track headers.
fn unity_matrix() -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    for value in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

fn mvhd(timescale: u32, duration: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(96);
    body.extend_from_slice(&[0; 8]); // creation and modification time
    body.extend_from_slice(&timescale.to_be_bytes());
    body.extend_from_slice(&duration.to_be_bytes());
    body.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    body.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    body.extend_from_slice(&[0; 10]);
    body.extend_from_slice(&unity_matrix());
    body.extend_from_slice(&[0; 24]);
    body.extend_from_slice(&2u32.to_be_bytes()); // next track id
    full_box(b"mvhd", 0, &body)
}

// ---- MXF ----

/// A partition pack key; `kind` 2 header, 4 footer; `status` 1 open incomplete, 4 closed
/// complete.
fn partition_key(kind: u8, status: u8) -> [u8; 16] {
    [
        0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01, kind, status,
        0x00,
    ]
}

/// An MPEG-2 picture element of the generic container: the key the payload is filed under.
const MXF_PICTURE_ELEMENT: [u8; 16] = [
    0x06, 0x0E, 0x2B, 0x34, 0x01, 0x02, 0x01, 0x01, 0x0D, 0x01, 0x03, 0x01, 0x15, 0x01, 0x05, 0x01,
];

/// Operational pattern OP1a (one item, one package).
const MXF_OP1A: [u8; 16] = [
    0x06, 0x0E, 0x2B, 0x34, 0x04, 0x01, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01, 0x01, 0x09, 0x00,
];

fn partition_pack(key: [u8; 16], this: u64, footer: u64, body_sid: u32) -> Vec<u8> {
    let mut value = Vec::with_capacity(96);
    value.extend_from_slice(&1u16.to_be_bytes()); // major version
    value.extend_from_slice(&3u16.to_be_bytes()); // minor version (SMPTE 377-1)
    value.extend_from_slice(&1u32.to_be_bytes()); // KAG size
    value.extend_from_slice(&this.to_be_bytes());
    value.extend_from_slice(&0u64.to_be_bytes()); // previous partition
    value.extend_from_slice(&footer.to_be_bytes());
    value.extend_from_slice(&0u64.to_be_bytes()); // header byte count
    value.extend_from_slice(&0u64.to_be_bytes()); // index byte count
    value.extend_from_slice(&0u32.to_be_bytes()); // index SID
    value.extend_from_slice(&0u64.to_be_bytes()); // body offset
    value.extend_from_slice(&body_sid.to_be_bytes());
    value.extend_from_slice(&MXF_OP1A);
    value.extend_from_slice(&0u32.to_be_bytes()); // essence containers: none listed
    value.extend_from_slice(&16u32.to_be_bytes());
    let mut out = key.to_vec();
    out.push(0x83);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&value);
    out
}

fn mxf_layout(payload: u64) -> Layout {
    // The header cannot know where the footer will be, as when writing to a pipe: 0.
    let mut head = partition_pack(partition_key(0x02, 0x01), 0, 0, 1);
    head.extend_from_slice(&MXF_PICTURE_ELEMENT);
    head.push(0x88);
    head.extend_from_slice(&payload.to_be_bytes());
    let footer_at = head.len() as u64 + payload;
    let mut tail = partition_pack(partition_key(0x04, 0x04), footer_at, footer_at, 0);
    let mut rip = Vec::new();
    for (sid, offset) in [(1u32, 0u64), (0, footer_at)] {
        rip.extend_from_slice(&sid.to_be_bytes());
        rip.extend_from_slice(&offset.to_be_bytes());
    }
    let key = [
        0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0D, 0x01, 0x02, 0x01, 0x01, 0x11, 0x01,
        0x00,
    ];
    let value_len = rip.len() + 4;
    let overall = (16 + 1 + value_len) as u32;
    tail.extend_from_slice(&key);
    tail.push(value_len as u8);
    tail.extend_from_slice(&rip);
    tail.extend_from_slice(&overall.to_be_bytes());
    Layout { head, tail }
}

// ---- demo's colour bars ----

/// An uncompressed QuickTime movie of colour bars with a line sweeping across, which any
/// player decodes: `demo`'s sample, a file the platform would accept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ColourBars {
    pub width: u16,
    pub height: u16,
    pub frames: u32,
    pub fps: u32,
}

impl ColourBars {
    /// `demo`'s sample: three seconds at 24 frames per second, 320 × 180, about 12 MiB.
    pub const DEMO: ColourBars = ColourBars {
        width: 320,
        height: 180,
        frames: 72,
        fps: 24,
    };

    /// Bytes of one RGB frame.
    pub fn frame_len(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * 3
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        let (head, tail) = self.structure();
        head.len() as u64 + self.frame_len() * u64::from(self.frames) + tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's bytes in order, `piece_len` at a time; the `moov` comes last.
    pub fn pieces(&self, piece_len: usize) -> Pieces {
        let (head, tail) = self.structure();
        Pieces::new(
            head,
            Body::Frames(FrameSource {
                movie: *self,
                frame: None,
                pixels: Vec::new(),
            }),
            self.frame_len() * u64::from(self.frames),
            tail,
            piece_len,
        )
    }

    /// `ftyp` and the `mdat` header; the `moov` with one video track whose frames are the
    /// `mdat`'s payload, all in one chunk.
    fn structure(&self) -> (Vec<u8>, Vec<u8>) {
        let frame_len = self.frame_len();
        let frames_len = frame_len * u64::from(self.frames);
        let mut head = ftyp(*b"qt  ");
        head.extend(mdat_header(frames_len, mdat_is_large(frames_len)));
        // Each frame lasts 100 ticks: durations are whole numbers at any frame rate.
        let timescale = self.fps * 100;
        let duration = self.frames * 100;
        let width = u32::from(self.width);
        let height = u32::from(self.height);

        let mut tkhd = Vec::new();
        tkhd.extend_from_slice(&[0; 8]); // creation and modification time
        tkhd.extend_from_slice(&1u32.to_be_bytes()); // track id
        tkhd.extend_from_slice(&[0; 4]);
        tkhd.extend_from_slice(&duration.to_be_bytes());
        tkhd.extend_from_slice(&[0; 8]);
        tkhd.extend_from_slice(&[0; 8]); // layer, alternate group, volume, reserved
        tkhd.extend_from_slice(&unity_matrix());
        tkhd.extend_from_slice(&(width << 16).to_be_bytes());
        tkhd.extend_from_slice(&(height << 16).to_be_bytes());
        // Enabled, in the movie, in the preview.
        let tkhd = full_box(b"tkhd", 0x7, &tkhd);

        let mut mdhd = Vec::new();
        mdhd.extend_from_slice(&[0; 8]);
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.extend_from_slice(&duration.to_be_bytes());
        mdhd.extend_from_slice(&0x55C4u16.to_be_bytes()); // language "und"
        mdhd.extend_from_slice(&[0; 2]);
        let mdhd = full_box(b"mdhd", 0, &mdhd);

        let mut hdlr = Vec::new();
        hdlr.extend_from_slice(b"mhlr");
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0; 12]);
        let name = b"VideoHandler";
        hdlr.push(name.len() as u8);
        hdlr.extend_from_slice(name);
        let hdlr = full_box(b"hdlr", 0, &hdlr);

        // Graphics mode "copy", no opcolor.
        let vmhd = full_box(b"vmhd", 1, &[0x00, 0x40, 0, 0, 0, 0, 0, 0]);
        let mut dref = 1u32.to_be_bytes().to_vec();
        dref.extend(full_box(b"alis", 1, &[])); // the media are in this file
        let dinf = boxed(b"dinf", &full_box(b"dref", 0, &dref));

        let mut entry = Vec::new();
        entry.extend_from_slice(&[0; 6]);
        entry.extend_from_slice(&1u16.to_be_bytes()); // data reference index
        entry.extend_from_slice(&[0; 4]); // version, revision
        entry.extend_from_slice(b"appl");
        entry.extend_from_slice(&0u32.to_be_bytes()); // temporal quality
        entry.extend_from_slice(&0x0400u32.to_be_bytes()); // spatial quality: lossless
        entry.extend_from_slice(&self.width.to_be_bytes());
        entry.extend_from_slice(&self.height.to_be_bytes());
        entry.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
        entry.extend_from_slice(&0x0048_0000u32.to_be_bytes());
        entry.extend_from_slice(&0u32.to_be_bytes());
        entry.extend_from_slice(&1u16.to_be_bytes()); // frames per sample
        let mut compressor = [0u8; 32];
        let label = b"hotfolder colour bars";
        compressor[0] = label.len() as u8;
        compressor[1..=label.len()].copy_from_slice(label);
        entry.extend_from_slice(&compressor);
        entry.extend_from_slice(&24u16.to_be_bytes()); // depth: RGB
        entry.extend_from_slice(&0xFFFFu16.to_be_bytes()); // no colour table
        let mut stsd = 1u32.to_be_bytes().to_vec();
        stsd.extend(boxed(b"raw ", &entry));
        let stsd = full_box(b"stsd", 0, &stsd);

        let table =
            |words: &[u32]| -> Vec<u8> { words.iter().flat_map(|w| w.to_be_bytes()).collect() };
        let stts = full_box(b"stts", 0, &table(&[1, self.frames, 100]));
        let stsc = full_box(b"stsc", 0, &table(&[1, 1, self.frames, 1]));
        let stsz = full_box(b"stsz", 0, &table(&[frame_len as u32, self.frames]));
        let stco = full_box(b"stco", 0, &table(&[1, head.len() as u32]));
        let stbl = boxed(b"stbl", &[stsd, stts, stsc, stsz, stco].concat());
        let minf = boxed(b"minf", &[vmhd, dinf, stbl].concat());
        let mdia = boxed(b"mdia", &[mdhd, hdlr, minf].concat());
        let trak = boxed(b"trak", &[tkhd, mdia].concat());
        let moov = boxed(b"moov", &[mvhd(timescale, duration), trak].concat());
        (head, moov)
    }
}

/// The frames of a [`ColourBars`] movie, made one at a time as the body is read.
struct FrameSource {
    movie: ColourBars,
    /// The frame in `pixels`.
    frame: Option<u64>,
    pixels: Vec<u8>,
}

impl FrameSource {
    fn fill(&mut self, mut at: u64, mut n: usize, out: &mut Vec<u8>) {
        let frame_len = self.movie.frame_len();
        while n > 0 {
            let index = at / frame_len;
            if self.frame != Some(index) {
                self.draw(index);
            }
            let from = (at % frame_len) as usize;
            let take = n.min(self.pixels.len() - from);
            out.extend_from_slice(&self.pixels[from..from + take]);
            at += take as u64;
            n -= take;
        }
    }

    /// Seven bars at 75 % over the top two thirds; below, a grey ramp with a white line that
    /// crosses the picture once over the movie, so every frame differs.
    fn draw(&mut self, index: u64) {
        const BARS: [[u8; 3]; 7] = [
            [191, 191, 191],
            [191, 191, 0],
            [0, 191, 191],
            [0, 191, 0],
            [191, 0, 191],
            [191, 0, 0],
            [0, 0, 191],
        ];
        let width = usize::from(self.movie.width);
        let height = usize::from(self.movie.height);
        let frames = u64::from(self.movie.frames.max(1));
        let line = (index * width as u64 / frames) as usize;
        self.pixels.clear();
        for y in 0..height {
            for x in 0..width {
                let rgb = if y < height * 2 / 3 {
                    BARS[x * BARS.len() / width]
                } else if x == line {
                    [255, 255, 255]
                } else {
                    let grey = (x * 255 / width.max(1)) as u8;
                    [grey, grey, grey]
                };
                self.pixels.extend_from_slice(&rgb);
            }
        }
        self.frame = Some(index);
    }
}

#[cfg(test)]
mod tests;
