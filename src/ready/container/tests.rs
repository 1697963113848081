//! Tests of the container check: synthesized MP4/MOV/MXF files (whole, cut, damaged, renamed),
//! real files written by `ffmpeg` when it is installed, and the cost on a 10 GiB sparse file.

use super::*;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

use proptest::prelude::*;

const MP4: ContainerKind = ContainerKind::IsoBmff { quicktime: false };
const MOV: ContainerKind = ContainerKind::IsoBmff { quicktime: true };

// ---- building files ----

/// A box with a 32-bit size and `body_len` bytes of a pattern as its body.
fn iso_box(kind: &[u8; 4], body_len: usize) -> Vec<u8> {
    let mut out = ((8 + body_len) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend((0..body_len).map(|i| (i * 7 + 3) as u8));
    out
}

/// A box with a 64-bit size.
fn large_box(kind: &[u8; 4], body_len: usize) -> Vec<u8> {
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(&(16 + body_len as u64).to_be_bytes());
    out.extend((0..body_len).map(|i| (i * 5 + 1) as u8));
    out
}

fn ftyp(brand: &[u8; 4]) -> Vec<u8> {
    let mut out = 20u32.to_be_bytes().to_vec();
    out.extend_from_slice(b"ftyp");
    out.extend_from_slice(brand);
    out.extend_from_slice(&[0, 0, 2, 0]);
    out.extend_from_slice(brand);
    out
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// An export as most writers leave it: ftyp, free, the frames, then the index.
fn mp4_moov_last() -> Vec<u8> {
    join(&[
        ftyp(b"isom"),
        iso_box(b"free", 0),
        iso_box(b"mdat", 5000),
        iso_box(b"moov", 700),
    ])
}

/// "Fast start": the index first, so a player can start before the whole file arrives.
fn mov_moov_first() -> Vec<u8> {
    join(&[
        ftyp(b"qt  "),
        iso_box(b"wide", 0),
        iso_box(b"moov", 700),
        iso_box(b"mdat", 5000),
    ])
}

fn fragmented() -> Vec<u8> {
    join(&[
        ftyp(b"iso5"),
        iso_box(b"moov", 300),
        iso_box(b"moof", 100),
        iso_box(b"mdat", 2000),
        iso_box(b"moof", 100),
        iso_box(b"mdat", 2000),
    ])
}

fn ber4(len: usize) -> Vec<u8> {
    let mut out = vec![0x83];
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out
}

/// A partition pack: `kind` 2 header, 3 body, 4 footer; `status` 1..=4.
fn partition(kind: u8, status: u8, this: u64, footer: u64, metadata: u64) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&[0, 1, 0, 3, 0, 0, 0, 1]); // version 1.3, KAG 1
    value.extend_from_slice(&this.to_be_bytes());
    value.extend_from_slice(&0u64.to_be_bytes());
    value.extend_from_slice(&footer.to_be_bytes());
    value.extend_from_slice(&metadata.to_be_bytes()); // header byte count
    value.extend_from_slice(&0u64.to_be_bytes()); // index byte count
    value.extend_from_slice(&[0; 4 + 8 + 4 + 16 + 8]);
    let mut out = MXF_PARTITION.to_vec();
    out.extend_from_slice(&[kind, status, 0]);
    out.extend(ber4(value.len()));
    out.extend(value);
    out
}

fn essence(len: usize) -> Vec<u8> {
    let mut out = vec![
        0x06, 0x0E, 0x2B, 0x34, 0x01, 0x02, 0x01, 0x01, 0x0D, 0x01, 0x03, 0x01, 0x15, 0x01, 0x05,
        0x01,
    ];
    out.extend(ber4(len));
    out.extend((0..len).map(|i| (i * 11 + 5) as u8));
    out
}

fn rip(entries: &[(u32, u64)]) -> Vec<u8> {
    let mut value = Vec::new();
    for (sid, offset) in entries {
        value.extend_from_slice(&sid.to_be_bytes());
        value.extend_from_slice(&offset.to_be_bytes());
    }
    let mut out = MXF_RIP.to_vec();
    out.extend(ber4(value.len() + 4));
    out.extend(value);
    let overall = (out.len() + 4) as u32;
    out.extend_from_slice(&overall.to_be_bytes());
    out
}

/// How to build an MXF file.
#[derive(Clone, Copy)]
struct Mxf {
    run_in: usize,
    /// The footer's offset is written into the header partition pack.
    header_knows_footer: bool,
    /// The footer partition's status, or no footer at all.
    footer: Option<u8>,
    footer_metadata: usize,
    rip: bool,
}

impl Mxf {
    const FINISHED: Mxf = Mxf {
        run_in: 0,
        header_knows_footer: true,
        footer: Some(4),
        footer_metadata: 0,
        rip: true,
    };

    fn bytes(self) -> Vec<u8> {
        let header_len = partition(2, 4, 0, 0, 0).len();
        let body = essence(3000);
        let footer_at = (header_len + body.len()) as u64;
        let known = if self.header_knows_footer {
            footer_at
        } else {
            0
        };
        let mut out = vec![0x20; self.run_in];
        out.extend(partition(2, 4, 0, known, 0));
        out.extend(body);
        if let Some(status) = self.footer {
            out.extend(partition(
                4,
                status,
                footer_at,
                footer_at,
                self.footer_metadata as u64,
            ));
            out.extend(vec![0u8; self.footer_metadata]);
        }
        if self.rip {
            let last = if self.footer.is_some() { footer_at } else { 0 };
            out.extend(rip(&[(1, 0), (0, last)]));
        }
        out
    }
}

// ---- checking ----

fn file_of(bytes: &[u8]) -> File {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file
}

fn checked(bytes: &[u8], kind: ContainerKind) -> ContainerCheck {
    check(&file_of(bytes), bytes.len() as u64, kind).unwrap()
}

fn verdict(bytes: &[u8], kind: ContainerKind) -> ContainerVerdict {
    checked(bytes, kind).verdict
}

fn complete(summary: &str) -> ContainerVerdict {
    ContainerVerdict::Complete {
        summary: summary.into(),
    }
}

fn missing(verdict: &ContainerVerdict) -> &str {
    match verdict {
        ContainerVerdict::Incomplete { missing } => missing,
        other => panic!("expected Incomplete, got {other:?}"),
    }
}

// ---- names ----

#[test]
fn the_suffix_says_which_container_is_checked() {
    let kind = |name: &str| ContainerKind::for_name(OsStr::new(name));
    for name in ["a.mp4", "b.M4V", "c.3gp", "d.3G2", "/x/y/e.Mp4"] {
        assert_eq!(kind(name), Some(MP4), "{name}");
    }
    assert_eq!(kind("clip.MOV"), Some(MOV));
    assert_eq!(kind("clip.qt"), Some(MOV));
    assert_eq!(kind("clip.mxf"), Some(ContainerKind::Mxf));
    for name in [
        "clip.avi",
        "clip.mkv",
        "clip",
        "mp4",
        ".mov.part",
        "clip.mov.part",
    ] {
        assert_eq!(kind(name), None, "{name}");
    }
}

// ---- ISO base media ----

#[test]
fn an_mp4_with_its_index_after_the_frames_is_complete() {
    let check = checked(&mp4_moov_last(), MP4);
    assert_eq!(check.verdict, complete("MP4 complete (moov after mdat)"));
    assert!(check.verdict.lets_through());
    // The small boxes at the start come in one read, the moov in another.
    assert_eq!(check.reads, 2, "{check:?}");
}

#[test]
fn a_fast_start_mov_is_complete_and_named_by_its_brand() {
    // The brand says QuickTime even when the name does not.
    assert_eq!(
        verdict(&mov_moov_first(), MP4),
        complete("MOV complete (moov before mdat)")
    );
}

#[test]
fn a_64_bit_mdat_size_is_followed() {
    let bytes = join(&[
        ftyp(b"mp42"),
        large_box(b"mdat", 9000),
        iso_box(b"moov", 400),
    ]);
    assert_eq!(
        verdict(&bytes, MP4),
        complete("MP4 complete (moov after mdat)")
    );
}

#[test]
fn old_quicktime_files_without_ftyp_are_accepted() {
    for bytes in [
        join(&[
            iso_box(b"wide", 0),
            iso_box(b"mdat", 900),
            iso_box(b"moov", 90),
        ]),
        join(&[iso_box(b"mdat", 900), iso_box(b"moov", 90)]),
        join(&[iso_box(b"moov", 90), iso_box(b"mdat", 900)]),
        join(&[
            iso_box(b"free", 10),
            iso_box(b"moov", 90),
            iso_box(b"mdat", 900),
        ]),
    ] {
        let found = verdict(&bytes, MOV);
        assert!(
            matches!(&found, ContainerVerdict::Complete { summary } if summary.starts_with("MOV complete")),
            "{found:?}"
        );
    }
}

#[test]
fn without_moov_the_export_never_finished() {
    let bytes = join(&[ftyp(b"isom"), iso_box(b"free", 0), iso_box(b"mdat", 5000)]);
    let found = verdict(&bytes, MP4);
    assert_eq!(missing(&found), "no moov box: the export never finished");
    assert!(!found.lets_through());
}

#[test]
fn an_index_without_frames_is_not_an_export() {
    let bytes = join(&[ftyp(b"qt  "), iso_box(b"moov", 500)]);
    assert!(missing(&verdict(&bytes, MOV)).starts_with("no mdat box"));
}

#[test]
fn an_mdat_size_left_at_zero_is_accepted_only_after_the_index() {
    // A writer streaming frames: the size is a placeholder until it finishes.
    let mut streaming = join(&[ftyp(b"isom"), 0u32.to_be_bytes().to_vec()]);
    streaming.extend_from_slice(b"mdat");
    streaming.extend(vec![9u8; 4000]);
    assert_eq!(
        missing(&verdict(&streaming, MP4)),
        "mdat size not written yet: the export never finished"
    );
    // "To the end of the file" after the index is a finished file.
    let mut finished = join(&[
        ftyp(b"isom"),
        iso_box(b"moov", 300),
        0u32.to_be_bytes().to_vec(),
    ]);
    finished.extend_from_slice(b"mdat");
    finished.extend(vec![9u8; 4000]);
    assert_eq!(
        verdict(&finished, MP4),
        complete("MP4 complete (moov before mdat)")
    );
}

#[test]
fn a_box_running_past_the_end_says_how_much_is_there() {
    let mut bytes = join(&[ftyp(b"isom"), iso_box(b"free", 0)]);
    bytes.extend_from_slice(&(2u32 * 1024 * 1024).to_be_bytes());
    bytes.extend_from_slice(b"mdat");
    bytes.extend(vec![0u8; 1024 * 1024 - 8]);
    assert_eq!(
        missing(&verdict(&bytes, MP4)),
        "the mdat box claims 2 MiB but the file ends after 1 MiB of it: still being written or cut short"
    );
}

#[test]
fn a_file_that_is_not_iso_media_at_all_fails_at_once() {
    let not = ContainerVerdict::NotThisContainer {
        why: "not an MP4/MOV file: no valid first box".into(),
    };
    let mut avi = b"RIFF".to_vec();
    avi.extend_from_slice(&1000u32.to_le_bytes());
    avi.extend_from_slice(b"AVI LIST");
    avi.extend(vec![0u8; 1000]);
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for bytes in [
        avi,
        garbage,
        Mxf::FINISHED.bytes(),
        b"just some text in a file named clip.mov\n".to_vec(),
        // A first box of an impossible size.
        join(&[3u32.to_be_bytes().to_vec(), b"ftyp".to_vec(), vec![0; 40]]),
    ] {
        assert_eq!(verdict(&bytes, MOV), not);
        assert!(!not.lets_through());
    }
}

#[test]
fn a_damaged_box_later_in_the_file_is_incomplete_not_foreign() {
    let mut bytes = join(&[ftyp(b"isom"), iso_box(b"mdat", 100)]);
    bytes.extend_from_slice(&[0, 0, 0, 3, 0xff, 0x00, 0x10, 0x20]);
    bytes.extend(vec![1u8; 64]);
    assert!(missing(&verdict(&bytes, MP4)).starts_with("damaged MP4: the box at byte 128"));
    let mut sized = join(&[ftyp(b"isom"), iso_box(b"mdat", 100)]);
    sized.extend_from_slice(&[0, 0, 0, 3]);
    sized.extend_from_slice(b"moov");
    assert!(missing(&verdict(&sized, MP4)).contains("impossible size (3 bytes)"));
}

#[test]
fn fragmented_mp4_cannot_prove_it_is_finished() {
    let found = verdict(&fragmented(), MP4);
    assert_eq!(
        found,
        ContainerVerdict::Unprovable {
            summary: "fragmented MP4: the container cannot prove it is finished".into()
        }
    );
    assert!(found.lets_through(), "the other signals decide");
    // A fragment cut short is still seen.
    let bytes = fragmented();
    assert!(missing(&verdict(&bytes[..bytes.len() - 100], MP4)).starts_with("the mdat box claims"));
}

#[test]
fn walking_stops_after_max_boxes_and_says_so() {
    let mut parts = vec![ftyp(b"iso5"), iso_box(b"moov", 50)];
    for _ in 0..MAX_BOXES {
        parts.push(iso_box(b"moof", 8));
        parts.push(iso_box(b"mdat", 16));
    }
    let check = checked(&join(&parts), MP4);
    assert_eq!(
        check.verdict,
        ContainerVerdict::Unprovable {
            summary: format!(
                "fragmented MP4: the container cannot prove it is finished (the first {MAX_BOXES} boxes checked)"
            )
        }
    );
    let mut plain = vec![ftyp(b"isom")];
    plain.extend((0..MAX_BOXES + 5).map(|_| iso_box(b"free", 4)));
    assert!(matches!(
        verdict(&join(&plain), MP4),
        ContainerVerdict::Unprovable { summary } if summary.contains("not checked to the end")
    ));
}

#[test]
fn an_empty_file_has_nothing_written_yet() {
    for kind in [MP4, ContainerKind::Mxf] {
        assert_eq!(
            missing(&verdict(b"", kind)),
            "the file is empty: nothing written yet"
        );
    }
}

#[test]
fn a_file_shorter_than_fstat_said_is_still_being_written() {
    let bytes = mp4_moov_last();
    let file = file_of(&bytes);
    let found = check(&file, bytes.len() as u64 + 4096, MP4)
        .unwrap()
        .verdict;
    assert_eq!(
        missing(&found),
        "the file got shorter while it was checked: it is still being written"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Wherever a writer or a copy stopped, the part on disk is never taken for a whole file.
    #[test]
    fn an_iso_file_cut_anywhere_is_never_complete(which in 0usize..3, cut_at in 0.0f64..1.0) {
        let bytes = match which {
            0 => mp4_moov_last(),
            1 => mov_moov_first(),
            _ => join(&[ftyp(b"mp42"), large_box(b"mdat", 3000), iso_box(b"moov", 200)]),
        };
        let cut = (bytes.len() as f64 * cut_at) as usize;
        let found = verdict(&bytes[..cut], MP4);
        prop_assert!(!matches!(found, ContainerVerdict::Complete { .. }), "cut at {}: {:?}", cut, found);
        prop_assert!(!matches!(found, ContainerVerdict::NotThisContainer { .. }), "cut at {}: {:?}", cut, found);
    }

    #[test]
    fn an_mxf_file_cut_anywhere_before_its_footer_ends_is_never_complete(
        knows in any::<bool>(), cut_at in 0.0f64..1.0,
    ) {
        let layout = Mxf { header_knows_footer: knows, ..Mxf::FINISHED };
        let bytes = layout.bytes();
        // A footer the header points at may be the end of a file without a RIP.
        let rip_len = rip(&[(1, 0), (0, 0)]).len();
        let limit = if knows { bytes.len() - rip_len } else { bytes.len() };
        let cut = (limit as f64 * cut_at) as usize;
        let found = verdict(&bytes[..cut], ContainerKind::Mxf);
        prop_assert!(!found.lets_through(), "cut at {}: {:?}", cut, found);
    }
}

// ---- MXF ----

const MXF_COMPLETE: &str = "MXF complete (closed footer partition)";

#[test]
fn an_mxf_with_a_closed_footer_is_complete_through_its_rip_or_its_header() {
    assert_eq!(
        verdict(&Mxf::FINISHED.bytes(), ContainerKind::Mxf),
        complete(MXF_COMPLETE)
    );
    // A streaming writer leaves the header's footer offset at 0: the RIP says where.
    let streamed = Mxf {
        header_knows_footer: false,
        ..Mxf::FINISHED
    };
    let check = checked(&streamed.bytes(), ContainerKind::Mxf);
    assert_eq!(check.verdict, complete(MXF_COMPLETE));
    assert!(check.reads <= 3, "{check:?}");
    // No RIP (it is optional): the header partition says where.
    let no_rip = Mxf {
        rip: false,
        ..Mxf::FINISHED
    };
    assert_eq!(
        verdict(&no_rip.bytes(), ContainerKind::Mxf),
        complete(MXF_COMPLETE)
    );
    // Closed but incomplete (02) is closed too; header metadata in the footer is allowed.
    let closed_incomplete = Mxf {
        footer: Some(2),
        footer_metadata: 600,
        ..Mxf::FINISHED
    };
    assert_eq!(
        verdict(&closed_incomplete.bytes(), ContainerKind::Mxf),
        complete(MXF_COMPLETE)
    );
}

#[test]
fn a_run_in_before_the_header_partition_is_allowed_up_to_64_kib() {
    let with_run_in = Mxf {
        run_in: 10_000,
        ..Mxf::FINISHED
    };
    assert_eq!(
        verdict(&with_run_in.bytes(), ContainerKind::Mxf),
        complete(MXF_COMPLETE)
    );
    let too_long = Mxf {
        run_in: 70_000,
        ..Mxf::FINISHED
    };
    assert!(matches!(
        verdict(&too_long.bytes(), ContainerKind::Mxf),
        ContainerVerdict::NotThisContainer { .. }
    ));
}

#[test]
fn an_mxf_without_a_footer_never_finished() {
    let no_footer = Mxf {
        header_knows_footer: false,
        footer: None,
        rip: false,
        ..Mxf::FINISHED
    };
    assert_eq!(
        missing(&verdict(&no_footer.bytes(), ContainerKind::Mxf)),
        "MXF has no closed footer partition: the export never finished"
    );
    // The RIP lists only the header and body: no footer either.
    let rip_without_footer = Mxf {
        header_knows_footer: false,
        footer: None,
        ..Mxf::FINISHED
    };
    assert_eq!(
        missing(&verdict(&rip_without_footer.bytes(), ContainerKind::Mxf)),
        "MXF has no closed footer partition: the export never finished"
    );
    // The header says where the footer will be, but the file ends before it.
    let promised = Mxf {
        footer: None,
        rip: false,
        ..Mxf::FINISHED
    };
    assert!(
        missing(&verdict(&promised.bytes(), ContainerKind::Mxf))
            .starts_with("the header partition puts the MXF footer partition at byte")
    );
}

#[test]
fn an_open_footer_was_not_finalised() {
    for status in [1, 3] {
        let open = Mxf {
            footer: Some(status),
            ..Mxf::FINISHED
        };
        assert_eq!(
            missing(&verdict(&open.bytes(), ContainerKind::Mxf)),
            "the MXF footer partition is still open: the export was not finalised"
        );
    }
}

#[test]
fn a_damaged_rip_or_footer_is_incomplete() {
    let mut bytes = Mxf::FINISHED.bytes();
    // The RIP's length byte no longer adds up with its overall length.
    let rip_at = bytes.len() - rip(&[(1, 0), (0, 0)]).len();
    bytes[rip_at + 19] ^= 0x10;
    assert!(missing(&verdict(&bytes, ContainerKind::Mxf)).contains("Random Index Pack"));
    // The footer's metadata claims more than the file holds.
    let mut bytes = Mxf {
        footer_metadata: 100,
        ..Mxf::FINISHED
    }
    .bytes();
    let footer_at = partition(2, 4, 0, 0, 0).len() + essence(3000).len();
    let hbc_at = footer_at + 16 + 4 + 32;
    bytes[hbc_at..hbc_at + 8].copy_from_slice(&100_000u64.to_be_bytes());
    assert!(missing(&verdict(&bytes, ContainerKind::Mxf)).contains("metadata and index"));
}

#[test]
fn a_file_whose_space_is_reserved_but_not_written_waits() {
    // posix_fallocate, an SMB client preallocating: zeros where the header will be.
    for kind in [
        ContainerKind::Mxf,
        ContainerKind::IsoBmff { quicktime: false },
    ] {
        let seen = verdict(&vec![0u8; 100_000], kind);
        let why = missing(&seen);
        assert!(why.contains("reserved"), "{why}");
    }
}

#[test]
fn a_file_that_is_not_mxf_fails_at_once() {
    for bytes in [mp4_moov_last(), b"MXF? no".to_vec()] {
        assert_eq!(
            verdict(&bytes, ContainerKind::Mxf),
            ContainerVerdict::NotThisContainer {
                why: "not an MXF file: no header partition at its start".into()
            }
        );
    }
    // The first bytes of a header key are a file being written, not a foreign one.
    assert!(
        missing(&verdict(&MXF_PARTITION[..9], ContainerKind::Mxf)).contains("header partition")
    );
}

// ---- real files ----

/// `ffmpeg` on PATH, or why not.
fn ffmpeg() -> Result<(), String> {
    match std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("ffmpeg -version failed: {}", out.status)),
        Err(err) => Err(format!("ffmpeg is not installed ({err})")),
    }
}

/// Two seconds of test pattern written by ffmpeg to `path` with `args` before the output.
fn render(path: &Path, args: &[&str]) {
    let output = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=2:size=320x240:rate=25",
        ])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn check_path(path: &Path) -> ContainerVerdict {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let kind = ContainerKind::for_name(path.file_name().unwrap()).unwrap();
    check(&file, len, kind).unwrap().verdict
}

/// The first `percent` % of `path` in a new file beside it.
fn cut_copy(path: &Path, percent: u64) -> PathBuf {
    let bytes = std::fs::read(path).unwrap();
    let cut = path.with_file_name(format!(
        "cut-{}",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &cut,
        &bytes[..(bytes.len() as u64 * percent / 100) as usize],
    )
    .unwrap();
    cut
}

#[test]
fn real_exports_from_ffmpeg_are_complete_and_incomplete_when_cut() {
    if let Err(why) = ffmpeg() {
        crate::test_skipped(format_args!("{why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "clip.mp4",
            &["-c:v", "mpeg4"],
            "MP4 complete (moov after mdat)",
        ),
        (
            "fast.mp4",
            &["-c:v", "mpeg4", "-movflags", "+faststart"],
            "MP4 complete (moov before mdat)",
        ),
        (
            "clip.mov",
            &["-c:v", "mpeg4"],
            "MOV complete (moov after mdat)",
        ),
        (
            "clip.mxf",
            &["-c:v", "mpeg2video", "-f", "mxf"],
            MXF_COMPLETE,
        ),
        (
            "clip.m4v",
            &["-c:v", "mpeg4", "-f", "mp4"],
            "MP4 complete (moov after mdat)",
        ),
    ];
    for (name, args, summary) in cases {
        let path = dir.path().join(name);
        render(&path, args);
        assert_eq!(check_path(&path), complete(summary), "{name}");
        let cut = check_path(&cut_copy(&path, 60));
        assert!(
            matches!(cut, ContainerVerdict::Incomplete { .. }),
            "{name} cut at 60 %: {cut:?}"
        );
    }
}

/// Watches `path` while ffmpeg writes it in real time: (verdicts seen while it ran, with the
/// file's size at each look; the final size).
fn watch_ffmpeg_write(path: &Path, args: &[&str]) -> (Vec<(u64, ContainerVerdict)>, u64) {
    let mut child = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-re", "-f", "lavfi"])
        .args(["-i", "testsrc=duration=4:size=640x360:rate=25"])
        .args(args)
        .arg(path)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    while child.try_wait().unwrap().is_none() {
        if let Ok(file) = File::open(path) {
            let len = file.metadata().unwrap().len();
            seen.push((
                len,
                check(
                    &file,
                    len,
                    ContainerKind::for_name(path.file_name().unwrap()).unwrap(),
                )
                .unwrap()
                .verdict,
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    (seen, std::fs::metadata(path).unwrap().len())
}

#[test]
fn while_ffmpeg_writes_an_export_it_is_never_complete_before_its_final_size() {
    if let Err(why) = ffmpeg() {
        crate::test_skipped(format_args!("{why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // High quality, so that ffmpeg's output buffer is flushed several times during the run.
    let cases: [(&str, &[&str]); 3] = [
        ("live.mp4", &["-c:v", "mpeg4", "-q:v", "2"]),
        ("live.mov", &["-c:v", "mpeg4", "-q:v", "2"]),
        (
            "live.mxf",
            &["-c:v", "mpeg2video", "-q:v", "2", "-g", "12", "-f", "mxf"],
        ),
    ];
    std::thread::scope(|scope| {
        for (name, args) in cases {
            let path = dir.path().join(name);
            scope.spawn(move || {
                let (seen, final_len) = watch_ffmpeg_write(&path, args);
                // Looks at a file with frames in it but not finished.
                let mid_write = seen
                    .iter()
                    .filter(|(len, v)| *len > 0 && matches!(v, ContainerVerdict::Incomplete { .. }))
                    .count();
                assert!(
                    mid_write > 5,
                    "{name}: {} looks, {mid_write} at a file being written",
                    seen.len()
                );
                for (len, verdict) in &seen {
                    assert!(
                        !verdict.lets_through() || *len == final_len,
                        "{name}: {verdict:?} at {len} of {final_len} bytes"
                    );
                    assert!(
                        !matches!(verdict, ContainerVerdict::NotThisContainer { .. }),
                        "{name}: {verdict:?} at {len} bytes"
                    );
                }
                assert!(
                    check_path(&path).lets_through(),
                    "{name} once ffmpeg exited"
                );
            });
        }
    });
}

#[test]
fn ffmpeg_writing_to_a_pipe_leaves_an_mxf_only_its_rip_can_prove() {
    if let Err(why) = ffmpeg() {
        crate::test_skipped(format_args!("{why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piped.mxf");
    let out = File::create(&path).unwrap();
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=2:size=320x240:rate=25",
        ])
        .args(["-c:v", "mpeg2video", "-f", "mxf", "-"])
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(check_path(&path), complete(MXF_COMPLETE));
    // Its header never learns the footer's offset: without the RIP, nothing proves the end.
    let bytes = std::fs::read(&path).unwrap();
    let overall = u32::from_be_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    let without_rip = dir.path().join("no-rip.mxf");
    std::fs::write(&without_rip, &bytes[..bytes.len() - overall]).unwrap();
    assert_eq!(
        missing(&check_path(&without_rip)),
        "MXF has no closed footer partition: the export never finished"
    );
}

#[test]
fn fragmented_mp4_from_ffmpeg_is_complete_by_its_index_and_unprovable_without_it() {
    if let Err(why) = ffmpeg() {
        crate::test_skipped(format_args!("{why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frag.mp4");
    render(
        &path,
        &[
            "-c:v",
            "mpeg4",
            "-g",
            "10",
            "-movflags",
            "frag_keyframe+empty_moov",
        ],
    );
    // ffmpeg ends a fragmented file with its fragment index (mfra), written last.
    assert_eq!(
        check_path(&path),
        ContainerVerdict::Complete {
            summary: "fragmented MP4 complete (fragment index mfra at the end)".into()
        }
    );
    // Without it (a writer that writes none, or a file cut before it): nothing proves the end.
    let bytes = std::fs::read(&path).unwrap();
    let mfra = u32::from_be_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() - mfra]).unwrap();
    assert_eq!(
        check_path(&cut),
        ContainerVerdict::Unprovable {
            summary: "fragmented MP4: the container cannot prove it is finished".into()
        }
    );
}

// ---- cost on a big file ----

const TEN_GIB: u64 = 10 * 1024 * 1024 * 1024;

/// A sparse file of `len` bytes with `start` at its start and `end` at its end, or why not.
fn sparse(len: u64, start: &[u8], end: &[u8]) -> Result<File, String> {
    let mut file = tempfile::tempfile().map_err(|e| e.to_string())?;
    file.set_len(len)
        .map_err(|e| format!("cannot make a sparse {len}-byte file here: {e}"))?;
    file.write_all(start).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(len - end.len() as u64))
        .map_err(|e| e.to_string())?;
    file.write_all(end).map_err(|e| e.to_string())?;
    Ok(file)
}

/// The check and its milliseconds, from the disk: the file's cached pages are dropped first
/// (Linux), as for an export written a while ago or on another machine.
fn timed(file: &File, len: u64, kind: ContainerKind) -> (ContainerCheck, f64) {
    file.sync_all().unwrap();
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed) {
        eprintln!("(cached pages not dropped: {err})");
    }
    let start = Instant::now();
    let check = check(file, len, kind).unwrap();
    (check, start.elapsed().as_secs_f64() * 1000.0)
}

#[test]
fn a_10_gib_mp4_is_checked_in_a_few_reads() {
    let moov = iso_box(b"moov", 1000);
    let mut start = ftyp(b"isom");
    start.extend_from_slice(&1u32.to_be_bytes());
    start.extend_from_slice(b"mdat");
    start.extend_from_slice(&(TEN_GIB - 20 - moov.len() as u64).to_be_bytes());
    let file = match sparse(TEN_GIB, &start, &moov) {
        Ok(file) => file,
        Err(why) => {
            crate::test_skipped(format_args!("{why}"));
            return;
        }
    };
    let (check, ms) = timed(&file, TEN_GIB, MP4);
    eprintln!(
        "10 GiB MP4: {} reads, {} bytes read, {ms:.3} ms",
        check.reads, check.bytes_read
    );
    assert_eq!(check.verdict, complete("MP4 complete (moov after mdat)"));
    assert!(check.reads <= 3, "{check:?}");
    assert!(check.bytes_read <= 3 * WINDOW, "{check:?}");
}

#[test]
fn a_10_gib_mxf_is_checked_in_a_few_reads() {
    let header = partition(2, 1, 0, 0, 0);
    let mut start = header.clone();
    start.extend_from_slice(&essence(0)[..16]);
    let footer_at = TEN_GIB - 200;
    let payload = footer_at - start.len() as u64 - 9;
    start.push(0x88);
    start.extend_from_slice(&payload.to_be_bytes());
    let mut end = partition(4, 4, footer_at, footer_at, 0);
    end.extend(rip(&[(1, 0), (0, footer_at)]));
    let padding = 200 - end.len();
    // The footer must start exactly at `footer_at`: a KLV fill after it keeps the sizes exact.
    let mut fill = vec![
        0x06, 0x0E, 0x2B, 0x34, 0x01, 0x01, 0x01, 0x02, 0x03, 0x01, 0x02, 0x10, 0x01, 0x00, 0x00,
        0x00,
    ];
    fill.extend(ber4(padding - 20));
    fill.extend(vec![0u8; padding - 20]);
    let mut footer = partition(4, 4, footer_at, footer_at, fill.len() as u64);
    footer.extend(fill);
    footer.extend(rip(&[(1, 0), (0, footer_at)]));
    assert_eq!(footer.len(), 200);
    let file = match sparse(TEN_GIB, &start, &footer) {
        Ok(file) => file,
        Err(why) => {
            crate::test_skipped(format_args!("{why}"));
            return;
        }
    };
    let (check, ms) = timed(&file, TEN_GIB, ContainerKind::Mxf);
    eprintln!(
        "10 GiB MXF: {} reads, {} bytes read, {ms:.3} ms",
        check.reads, check.bytes_read
    );
    assert_eq!(check.verdict, complete(MXF_COMPLETE));
    assert!(check.reads <= 3, "{check:?}");
}
