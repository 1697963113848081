//! The watch stage against real folders and real notify watchers: what a user dropping,
//! renaming and deleting files would expect the agent to hear, and what `scan` finds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotfolder::SkipReason;
use hotfolder::{FolderWatcher, WatchError, WatchEvent, WatchSpec, scan};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Long enough for a loaded CI machine; the happy path returns in milliseconds.
const PATIENCE: Duration = Duration::from_secs(5);

/// A watched folder laid out like the agent's: `inbox/` with `done/` and `failed/` inside and
/// an `outside/` sibling to move files from and to.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        // Canonical, so event paths compare equal to ours (macOS's /var is a symlink).
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("inbox");
        let outside = base.join("outside");
        for dir in [&root, &root.join("done"), &root.join("failed"), &outside] {
            fs::create_dir_all(dir).unwrap();
        }
        Setup {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn spec(&self, recursive: bool, poll_interval: Option<Duration>) -> WatchSpec {
        WatchSpec {
            root: self.root.clone(),
            recursive,
            poll_interval,
            ignore: vec![self.root.join("done"), self.root.join("failed")],
        }
    }

    fn watching(&self, spec: WatchSpec) -> (FolderWatcher, UnboundedReceiver<WatchEvent>) {
        let (tx, rx) = unbounded_channel();
        let mut watcher = FolderWatcher::new(tx);
        watcher.watch(spec).unwrap();
        (watcher, rx)
    }
}

/// Receives until an event satisfies `wanted`; returns every event seen before it.
/// Fails the test when nothing matching arrives within [`PATIENCE`].
async fn wait_for(
    rx: &mut UnboundedReceiver<WatchEvent>,
    what: &str,
    wanted: impl Fn(&WatchEvent) -> bool,
) -> Vec<WatchEvent> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut before = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if wanted(&event) => return before,
            Ok(Some(event)) => before.push(event),
            Ok(None) => panic!("event channel closed while waiting for {what}; saw {before:?}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}; saw {before:?}"),
        }
    }
}

fn is_touched(path: &Path) -> impl Fn(&WatchEvent) -> bool + '_ {
    move |e| matches!(e, WatchEvent::Touched(p) if p == path)
}

fn is_removed(path: &Path) -> impl Fn(&WatchEvent) -> bool + '_ {
    move |e| matches!(e, WatchEvent::Removed(p) if p == path)
}

fn mentions(events: &[WatchEvent], path: &Path) -> bool {
    events.iter().any(|e| match e {
        WatchEvent::Touched(p) | WatchEvent::Removed(p) => p.starts_with(path),
        WatchEvent::RescanNeeded { why, .. } => why.contains(&*path.to_string_lossy()),
        WatchEvent::FolderGone { root }
        | WatchEvent::Overflow { root }
        | WatchEvent::WatchLimit { root, .. } => root.starts_with(path),
    })
}

#[tokio::test]
async fn create_write_rename_and_delete_are_reported() {
    let setup = Setup::new();
    let existing = setup.root.join("existing.mov");
    fs::write(&existing, b"first").unwrap();
    let (_watcher, mut rx) = setup.watching(setup.spec(true, None));

    let created = setup.root.join("new.mp4");
    fs::write(&created, b"frames").unwrap();
    wait_for(&mut rx, "Touched for a new file", is_touched(&created)).await;

    // Appending to a file that was there before the watch started.
    use std::io::Write;
    let mut file = fs::OpenOptions::new().append(true).open(&existing).unwrap();
    file.write_all(b" more").unwrap();
    drop(file);
    wait_for(&mut rx, "Touched for a write", is_touched(&existing)).await;

    // Finished elsewhere, then moved in: reported under its new name.
    let staged = setup.outside.join("render.mov");
    fs::write(&staged, b"done rendering").unwrap();
    let moved_in = setup.root.join("render.mov");
    fs::rename(&staged, &moved_in).unwrap();
    wait_for(
        &mut rx,
        "Touched for a rename into the folder",
        is_touched(&moved_in),
    )
    .await;

    // Renamed within the folder: the old name goes, the new one arrives.
    let renamed = setup.root.join("render-final.mov");
    fs::rename(&moved_in, &renamed).unwrap();
    wait_for(&mut rx, "Removed for the old name", is_removed(&moved_in)).await;
    wait_for(&mut rx, "Touched for the new name", is_touched(&renamed)).await;

    fs::rename(&renamed, setup.outside.join("taken-back.mov")).unwrap();
    wait_for(&mut rx, "Removed for a rename away", is_removed(&renamed)).await;

    fs::remove_file(&created).unwrap();
    wait_for(&mut rx, "Removed for a delete", is_removed(&created)).await;
}

#[tokio::test]
async fn files_inside_done_and_failed_are_not_reported() {
    let setup = Setup::new();
    let (_watcher, mut rx) = setup.watching(setup.spec(true, None));

    // What the finish stage does: move an uploaded file into done/ and write its sidecar.
    let clip = setup.root.join("clip.mov");
    fs::write(&clip, b"video").unwrap();
    wait_for(&mut rx, "Touched for the new file", is_touched(&clip)).await;
    fs::create_dir_all(setup.root.join("done/sub")).unwrap();
    fs::rename(&clip, setup.root.join("done/sub/clip.mov")).unwrap();
    fs::write(setup.root.join("done/sub/clip.mov.upload.json"), b"{}").unwrap();
    fs::write(setup.root.join("failed/broken.mov"), b"x").unwrap();

    // inotify delivers in order, so anything about done/ or failed/ would come before this.
    let sentinel = setup.root.join("sentinel.mp4");
    fs::write(&sentinel, b"x").unwrap();
    let before = wait_for(&mut rx, "Touched for the sentinel", is_touched(&sentinel)).await;
    assert!(!mentions(&before, &setup.root.join("done")), "{before:?}");
    assert!(!mentions(&before, &setup.root.join("failed")), "{before:?}");
    assert!(before.contains(&WatchEvent::Removed(clip)), "{before:?}");
}

#[tokio::test]
async fn non_recursive_watch_ignores_subfolders() {
    let setup = Setup::new();
    let sub = setup.root.join("project");
    fs::create_dir(&sub).unwrap();
    let (_watcher, mut rx) = setup.watching(setup.spec(false, None));

    fs::create_dir(setup.root.join("later")).unwrap();
    fs::write(sub.join("nested.mov"), b"x").unwrap();
    let top = setup.root.join("top.mov");
    fs::write(&top, b"x").unwrap();
    let before = wait_for(&mut rx, "Touched for the top-level file", is_touched(&top)).await;
    assert!(!mentions(&before, &sub), "{before:?}");
    assert!(!mentions(&before, &setup.root.join("later")), "{before:?}");
}

#[tokio::test]
async fn a_folder_moved_in_asks_for_a_rescan_that_finds_its_files() {
    let setup = Setup::new();
    let spec = setup.spec(true, None);
    let (_watcher, mut rx) = setup.watching(spec.clone());

    let shoot = setup.outside.join("shoot");
    fs::create_dir(&shoot).unwrap();
    fs::write(shoot.join("a.mov"), b"x").unwrap();
    fs::rename(&shoot, setup.root.join("shoot")).unwrap();
    wait_for(&mut rx, "RescanNeeded for the new folder", |e| {
        matches!(e, WatchEvent::RescanNeeded { root, why }
            if root == &setup.root && why.contains("shoot"))
    })
    .await;
    assert!(scan(&spec).files.contains(&setup.root.join("shoot/a.mov")));
}

/// With `poll_interval` set the folder is polled by the agent (see `agent::intake`) and still
/// watched with events: the watcher says so, and local changes are reported at once.
#[tokio::test]
async fn poll_interval_keeps_events_and_says_the_folder_is_polled() {
    let setup = Setup::new();
    let (tx, mut rx) = unbounded_channel();
    let mut watcher = FolderWatcher::new(tx);
    let mode = watcher
        .watch(setup.spec(true, Some(Duration::from_millis(200))))
        .unwrap();
    assert!(mode.events && mode.configured, "{mode}");
    assert_eq!(mode.poll_every, Some(Duration::from_millis(200)));
    let text = mode.to_string();
    assert!(
        text.starts_with("events + polling every 0.2 s (") && text.contains("poll_interval set"),
        "{text}"
    );

    // In the folder itself: a file made at once in a new subfolder may come before that
    // subfolder's watch, which is reported as a rescan instead (see the test above).
    let file = setup.root.join("clip.mov");
    fs::write(&file, b"x").unwrap();
    wait_for(&mut rx, "Touched from events", is_touched(&file)).await;
    fs::remove_file(&file).unwrap();
    wait_for(&mut rx, "Removed from events", is_removed(&file)).await;
}

#[test]
fn watch_refuses_a_file_or_a_missing_folder_and_unwatch_forgets() {
    let setup = Setup::new();
    let (tx, _rx) = unbounded_channel();
    let mut watcher = FolderWatcher::new(tx);
    let file = setup.root.join("clip.mov");
    fs::write(&file, b"x").unwrap();

    let err = watcher
        .watch(WatchSpec {
            root: file.clone(),
            ..setup.spec(true, None)
        })
        .unwrap_err();
    assert!(matches!(err, WatchError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("clip.mov"), "{err}");

    let missing = setup.root.join("nope");
    let err = watcher
        .watch(WatchSpec {
            root: missing,
            ..setup.spec(true, None)
        })
        .unwrap_err();
    assert!(matches!(err, WatchError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");

    watcher.watch(setup.spec(true, None)).unwrap();
    watcher
        .watch(WatchSpec {
            root: setup.outside.clone(),
            ..setup.spec(false, Some(Duration::from_secs(1)))
        })
        .unwrap();
    assert_eq!(
        watcher.roots(),
        vec![setup.root.clone(), setup.outside.clone()]
    );
    // Watching the same root again replaces the old watch rather than adding a second one.
    watcher.watch(setup.spec(false, None)).unwrap();
    assert_eq!(watcher.roots().len(), 2);
    watcher.unwatch(&setup.root);
    assert_eq!(watcher.roots(), vec![setup.outside.clone()]);
}

#[test]
fn scan_finds_nested_files_and_skips_done_failed() {
    let setup = Setup::new();
    let root = &setup.root;
    fs::create_dir_all(root.join("a/b")).unwrap();
    for name in [
        "top.mov",
        "a/mid.mp4",
        "a/b/deep.mxf",
        "done/up.mov",
        "failed/bad.mov",
    ] {
        fs::write(root.join(name), b"x").unwrap();
    }

    let found = scan(&setup.spec(true, None));
    assert_eq!(
        found.files,
        vec![
            root.join("a/b/deep.mxf"),
            root.join("a/mid.mp4"),
            root.join("top.mov")
        ]
    );
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    assert!(found.errors.is_empty(), "{:?}", found.errors);

    let top_only = scan(&setup.spec(false, None));
    assert_eq!(top_only.files, vec![root.join("top.mov")]);
}

#[cfg(unix)]
#[test]
fn scan_skips_symlinks_with_a_reason_and_survives_a_loop() {
    use std::os::unix::fs::symlink;
    let setup = Setup::new();
    let root = &setup.root;
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/real.mov"), b"x").unwrap();
    fs::write(setup.outside.join("elsewhere.mov"), b"x").unwrap();
    symlink(setup.outside.join("elsewhere.mov"), root.join("link.mov")).unwrap();
    symlink(root, root.join("sub/loop")).unwrap();
    symlink(root.join("sub"), root.join("sub/loop2")).unwrap();

    let found = scan(&setup.spec(true, None));
    assert_eq!(found.files, vec![root.join("sub/real.mov")]);
    assert_eq!(
        found.skipped,
        vec![
            (root.join("link.mov"), SkipReason::Symlink),
            (root.join("sub/loop"), SkipReason::Symlink),
            (root.join("sub/loop2"), SkipReason::Symlink),
        ]
    );
    assert!(found.errors.is_empty(), "{:?}", found.errors);
}

#[cfg(unix)]
#[test]
fn scan_reports_an_unreadable_root_as_an_error() {
    let setup = Setup::new();
    let found = scan(&WatchSpec {
        root: setup.root.join("missing"),
        ..setup.spec(true, None)
    });
    assert!(found.files.is_empty());
    assert_eq!(found.errors.len(), 1);
    assert_eq!(found.errors[0].0, setup.root.join("missing"));
}

#[test]
fn scan_handles_ten_thousand_files_quickly() {
    let setup = Setup::new();
    // Hard links: each is its own directory entry and regular file to `scan`, and making one
    // costs a fraction of creating a file, which keeps this test fast on a busy disk.
    let original = setup.outside.join("clip.mov");
    fs::write(&original, b"x").unwrap();
    for d in 0..10 {
        let dir = setup.root.join(format!("day-{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            fs::hard_link(&original, dir.join(format!("clip-{f:04}.mov"))).unwrap();
        }
    }
    let started = Instant::now();
    let found = scan(&setup.spec(true, None));
    let took = started.elapsed();
    assert_eq!(found.files.len(), 10_000);
    assert!(
        took < Duration::from_secs(2),
        "scan of 10,000 files took {took:?}"
    );
}

#[tokio::test]
async fn the_watched_folder_itself_going_away_is_reported() {
    for how in ["deleted", "renamed"] {
        let setup = Setup::new();
        let (_watcher, mut rx) = setup.watching(setup.spec(true, None));
        match how {
            "deleted" => fs::remove_dir_all(&setup.root).unwrap(),
            _ => fs::rename(&setup.root, setup.outside.join("inbox-moved")).unwrap(),
        }
        wait_for(
            &mut rx,
            &format!("FolderGone when the folder is {how}"),
            |e| matches!(e, WatchEvent::FolderGone { root } if root == &setup.root),
        )
        .await;
    }
}
