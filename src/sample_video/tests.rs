//! Tests of the generated exports: exact sizes, reproducible bytes, containers the check
//! accepts only once the last piece is written, and a demo movie that ffmpeg decodes.

use super::*;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use proptest::prelude::*;

use crate::ready::{ContainerKind, ContainerVerdict, check_container};

const NAMES: [&str; 7] = [
    "clip.mp4", "clip.MOV", "clip.m4v", "clip.3gp", "clip.3g2", "clip.mxf", "clip.wav",
];

fn verdict_of(name: &str, bytes: &[u8]) -> Option<ContainerVerdict> {
    let kind = ContainerKind::for_name(OsStr::new(name))?;
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    Some(
        check_container(&file, bytes.len() as u64, kind)
            .unwrap()
            .verdict,
    )
}

use std::ffi::OsStr;

#[test]
fn the_suffix_chooses_the_container() {
    assert_eq!(
        SampleFormat::for_path(Path::new("a/b.MOV")),
        SampleFormat::IsoBmff { brand: *b"qt  " }
    );
    assert_eq!(
        SampleFormat::for_path(Path::new("b.mp4")),
        SampleFormat::IsoBmff { brand: *b"isom" }
    );
    assert_eq!(
        SampleFormat::for_path(Path::new("b.mxf")),
        SampleFormat::Mxf
    );
    assert_eq!(
        SampleFormat::for_path(Path::new("b.txt")),
        SampleFormat::Plain
    );
    assert_eq!(
        SampleFormat::for_path(Path::new("noext")),
        SampleFormat::Plain
    );
}

#[test]
fn every_sample_is_a_whole_container_of_exactly_the_size_asked() {
    for name in NAMES {
        let smallest = SampleFormat::for_path(Path::new(name)).smallest();
        for size in [
            smallest,
            smallest + 1,
            1000,
            1500,
            4096,
            5000,
            1 << 20,
            3 * (1 << 20) + 17,
        ] {
            if size < smallest {
                continue;
            }
            let sample = SampleVideo::for_path(Path::new(name), size, 7).unwrap();
            let bytes = sample.to_vec();
            assert_eq!(bytes.len() as u64, size, "{name} {size}");
            assert_eq!(sample.len(), size);
            match verdict_of(name, &bytes) {
                None => assert!(name.ends_with(".wav")),
                Some(verdict) => assert!(
                    matches!(&verdict, ContainerVerdict::Complete { summary } if summary.contains("complete")),
                    "{name} {size}: {verdict:?}"
                ),
            }
        }
    }
    assert_eq!(
        verdict_of(
            "a.mov",
            &SampleVideo::for_path(Path::new("a.mov"), 5000, 1)
                .unwrap()
                .to_vec()
        ),
        Some(ContainerVerdict::Complete {
            summary: "MOV complete (moov after mdat)".into()
        })
    );
}

#[test]
fn the_same_seed_gives_the_same_bytes_in_any_pieces() {
    let sample = SampleVideo::for_path(Path::new("x.mp4"), 100_003, 42).unwrap();
    let whole = sample.to_vec();
    for piece_len in [1, 7, 64, 4096, 99_999, 1 << 20] {
        let pieces: Vec<Vec<u8>> = sample.pieces(piece_len).collect();
        assert!(pieces.iter().all(|p| p.len() <= piece_len));
        assert_eq!(pieces.concat(), whole, "pieces of {piece_len}");
    }
    let mut written = Vec::new();
    sample.write_to(&mut written).unwrap();
    assert_eq!(written, whole);
    let other = SampleVideo::for_path(Path::new("x.mp4"), 100_003, 43).unwrap();
    assert_ne!(other.to_vec(), whole, "another seed, other frames");
}

#[test]
fn a_size_below_the_structure_is_refused() {
    let err = SampleVideo::for_path(Path::new("tiny.mxf"), 10, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "an MXF sample needs at least {} bytes, not 10",
            SampleFormat::Mxf.smallest()
        )
    );
    assert!(SampleVideo::for_path(Path::new("tiny.txt"), 0, 1).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Written in pieces, the file is whole only once the last piece is written.
    #[test]
    fn a_sample_cut_anywhere_is_not_let_through(
        which in 0usize..6, extra in 0u64..20_000, cut_at in 0.0f64..1.0,
    ) {
        let name = NAMES[which];
        let size = SampleFormat::for_path(Path::new(name)).smallest() + extra;
        let bytes = SampleVideo::for_path(Path::new(name), size, extra).unwrap().to_vec();
        let cut = (bytes.len() as f64 * cut_at) as usize;
        let verdict = verdict_of(name, &bytes[..cut]).unwrap();
        prop_assert!(
            matches!(verdict, ContainerVerdict::Incomplete { .. }),
            "{} cut at {} of {}: {:?}", name, cut, size, verdict
        );
    }
}

/// The structure of a sample of `size` bytes, without generating its payload: (head, payload
/// length, tail).
fn structure(format: SampleFormat, size: u64) -> (Vec<u8>, u64, Vec<u8>) {
    let pieces = SampleVideo::new(format, size, 1).unwrap().pieces(16);
    assert_eq!(pieces.total(), size);
    (pieces.head, pieces.body_len, pieces.tail)
}

#[test]
fn past_4_gib_the_mdat_size_takes_64_bits_and_sizes_stay_exact() {
    let mp4 = SampleFormat::IsoBmff { brand: *b"isom" };
    let smallest = mp4.smallest();
    // Around the size where a 32-bit mdat size stops being enough.
    let edge = smallest + u64::from(u32::MAX) - 8;
    for size in (edge - 3)..(edge + 12) {
        let (head, payload, tail) = structure(mp4, size);
        assert_eq!(head.len() as u64 + payload + tail.len() as u64, size);
        let mdat = &head[20..];
        let declared = match u32::from_be_bytes(mdat[..4].try_into().unwrap()) {
            1 => u64::from_be_bytes(mdat[8..16].try_into().unwrap()),
            small => u64::from(small),
        };
        assert_eq!(declared, mdat.len() as u64 + payload, "size {size}");
    }
}

#[test]
fn a_10_gib_sample_is_a_whole_container() {
    for name in ["big.mp4", "big.mxf"] {
        let size = 10 * 1024 * 1024 * 1024u64;
        let (head, _, tail) = structure(SampleFormat::for_path(Path::new(name)), size);
        let mut file = tempfile::tempfile().unwrap();
        if let Err(err) = file.set_len(size) {
            crate::test_skipped(format_args!("cannot make a sparse 10 GiB file here: {err}"));
            return;
        }
        file.write_all(&head).unwrap();
        file.seek(SeekFrom::Start(size - tail.len() as u64))
            .unwrap();
        file.write_all(&tail).unwrap();
        let kind = ContainerKind::for_name(OsStr::new(name)).unwrap();
        let check = check_container(&file, size, kind).unwrap();
        assert!(
            matches!(check.verdict, ContainerVerdict::Complete { .. }),
            "{name}: {check:?}"
        );
    }
}

// ---- demo's movie ----

#[test]
fn the_demo_movie_is_a_whole_quicktime_file_only_at_its_end() {
    let movie = ColourBars::DEMO;
    let pieces: Vec<Vec<u8>> = movie.pieces(1 << 20).collect();
    let bytes = pieces.concat();
    assert_eq!(bytes.len() as u64, movie.len());
    assert!(
        (11 << 20..13 << 20).contains(&movie.len()),
        "about 12 MiB: {}",
        movie.len()
    );
    assert_eq!(
        verdict_of("sample.mov", &bytes),
        Some(ContainerVerdict::Complete {
            summary: "MOV complete (moov after mdat)".into()
        })
    );
    let mut written = 0;
    for piece in &pieces[..pieces.len() - 1] {
        written += piece.len();
        assert!(
            matches!(
                verdict_of("sample.mov", &bytes[..written]),
                Some(ContainerVerdict::Incomplete { .. })
            ),
            "after {written} bytes"
        );
    }
}

fn tool(name: &str) -> Result<(), String> {
    match std::process::Command::new(name).arg("-version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{name} -version failed: {}", out.status)),
        Err(err) => Err(format!("{name} is not installed ({err})")),
    }
}

fn write_demo_movie(dir: &Path) -> PathBuf {
    let path = dir.join("sample.mov");
    let mut file = std::fs::File::create(&path).unwrap();
    for piece in ColourBars::DEMO.pieces(1 << 20) {
        file.write_all(&piece).unwrap();
    }
    path
}

#[test]
fn ffmpeg_decodes_every_frame_of_the_demo_movie() {
    for name in ["ffmpeg", "ffprobe"] {
        if let Err(why) = tool(name) {
            crate::test_skipped(format_args!("{why}"));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_demo_movie(dir.path());
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,r_frame_rate",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        probe.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let movie = ColourBars::DEMO;
    for line in [
        "codec_name=rawvideo".to_string(),
        format!("width={}", movie.width),
        format!("height={}", movie.height),
        format!("r_frame_rate={}/1", movie.fps),
        format!("nb_read_frames={}", movie.frames),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decode.status.success());
    assert!(
        decode.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&decode.stderr)
    );
}

#[test]
fn ffmpeg_sees_the_colour_bars_we_drew() {
    if let Err(why) = tool("ffmpeg") {
        crate::test_skipped(format_args!("{why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_demo_movie(dir.path());
    let frames = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(
        frames.status.success(),
        "{}",
        String::from_utf8_lossy(&frames.stderr)
    );
    let movie = ColourBars::DEMO;
    let mut drawn = Vec::new();
    let mut source = FrameSource {
        movie,
        frame: None,
        pixels: Vec::new(),
    };
    source.fill(
        0,
        (movie.frame_len() * u64::from(movie.frames)) as usize,
        &mut drawn,
    );
    assert_eq!(frames.stdout.len(), drawn.len());
    assert!(
        frames.stdout == drawn,
        "the decoded pixels differ from the drawn ones"
    );
    // Top left is the first bar (75 % grey), top right the last (blue).
    assert_eq!(&drawn[..3], &[191, 191, 191]);
    let row_end = usize::from(movie.width) * 3;
    assert_eq!(&drawn[row_end - 3..row_end], &[0, 0, 191]);
}
