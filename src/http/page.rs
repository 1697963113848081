//! The status page at `/`: what `hotfolder status` shows, as one read-only HTML page for a
//! browser, from the same snapshot. Rendered on the server and reloaded by the browser every
//! [`REFRESH_SECONDS`] (a meta refresh), so it needs no script at all: the
//! `Content-Security-Policy` allows nothing but its one inline style ([`content_security_policy`]).
//!
//! Every text that comes from outside (file and folder names, reasons, server messages) goes
//! through [`html`]; names are first shown as `status` shows them (`escape::escaped`), so a
//! control character is visible rather than acted on.

use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::agent::queue_counts;
use crate::config::{human_rate, human_size};
use crate::escape::escaped;
use crate::status_report::{ReportClock, StatusSnapshot, bytes_per_second};
use crate::store::{Job, JobState};

/// How often the browser loads the page again.
pub(super) const REFRESH_SECONDS: u32 = 5;

/// Unfinished jobs listed (waiting, paused, finishing) beyond those uploading: a drop of
/// thousands of files would make a page nobody reads.
const QUEUED_SHOWN: usize = 50;
/// Settling files listed.
const SETTLING_SHOWN: usize = 20;

/// The page's only style, inline: the CSP allows it by its hash.
const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{font-weight:600;background:#f4f4f4}\
.name{font-family:ui-monospace,monospace;word-break:break-all}\
.alert{padding:.6em .8em;border-left:4px solid #c00;background:#fdeaea;margin:.5em 0}\
.ok{color:#070}.bad{color:#b00;font-weight:600}.muted{color:#666}\
progress{width:10em;vertical-align:middle}footer{margin-top:2em;color:#666;font-size:.9em}";

/// The `Content-Security-Policy` of the page: nothing loads, runs or frames it; only its own
/// inline style applies.
pub(super) fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

/// Text made safe to put between tags or in a quoted attribute.
pub(super) fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path or file name as `status` shows it, made safe for HTML.
fn name(path: &std::path::Path) -> String {
    html(&escaped(path).to_string())
}

/// The whole page. `host` is the machine's name, for the title.
pub(super) fn render(snapshot: &StatusSnapshot, clock: &ReportClock, host: &str) -> String {
    let mut page = String::new();
    // Writing to a String cannot fail.
    let _ = write_page(&mut page, snapshot, clock, host);
    page
}

fn write_page(
    out: &mut String,
    snapshot: &StatusSnapshot,
    clock: &ReportClock,
    host: &str,
) -> fmt::Result {
    let host = html(host);
    writeln!(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>")?;
    writeln!(out, "<meta charset=\"utf-8\">")?;
    writeln!(
        out,
        "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"
    )?;
    writeln!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    writeln!(out, "<title>hotfolder on {host}</title>")?;
    writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>")?;
    writeln!(out, "<h1>hotfolder on {host}</h1>")?;

    let counts = queue_counts(&snapshot.counts);
    let settling = snapshot.settling.len();
    if settling > 0 {
        writeln!(
            out,
            "<p id=\"queue\">queue: {settling} settling (not complete yet), {}</p>",
            html(&counts)
        )?;
    } else {
        writeln!(out, "<p id=\"queue\">queue: {}</p>", html(&counts))?;
    }
    if let Some((reason, since)) = &snapshot.pause {
        writeln!(
            out,
            "<p class=\"alert\" id=\"paused\"><strong>PAUSED</strong> since {} ({}): {}<br>\
             Files stay where they are; hotfolder keeps trying and resumes by itself.</p>",
            clock.show(*since),
            clock.ago(*since),
            html(reason)
        )?;
    }
    for folder in &snapshot.missing {
        writeln!(
            out,
            "<p class=\"alert\"><strong>FOLDER MISSING</strong> since {} ({}): <span class=\"name\">{}</span>: {}<br>\
             New files there are not noticed until it is back; hotfolder checks every few seconds.</p>",
            clock.show(folder.since),
            clock.ago(folder.since),
            name(&folder.path),
            html(&escaped(&folder.why).to_string())
        )?;
    }

    for backlog in snapshot.notifications.iter().filter(|b| b.pending > 0) {
        let class = if backlog.failing_since.is_some() {
            "alert"
        } else {
            "muted"
        };
        writeln!(
            out,
            "<p class=\"{class} notifications\">{}</p>",
            html(&crate::status_report::notification_line(backlog, clock))
        )?;
    }

    write_folders(out, snapshot)?;
    write_uploading(out, snapshot)?;
    write_queued(out, snapshot)?;
    write_settling(out, snapshot, clock)?;
    write_transcoding(out, snapshot, clock)?;
    write_recent(out, snapshot, clock)?;

    writeln!(
        out,
        "<footer>Shown at {}; this page reloads every {REFRESH_SECONDS} s. The same facts as \
         <code>hotfolder status</code>; as JSON at <a href=\"/api/status\">/api/status</a>, \
         for Prometheus at <a href=\"/metrics\">/metrics</a>, health at \
         <a href=\"/healthz\">/healthz</a>. State store: <span class=\"name\">{}</span></footer>",
        clock.show(clock.now),
        name(&snapshot.store_path)
    )?;
    writeln!(out, "</body>\n</html>")
}

fn write_folders(out: &mut String, snapshot: &StatusSnapshot) -> fmt::Result {
    writeln!(out, "<h2>Folders</h2>")?;
    if snapshot.watched.is_empty() && snapshot.missing.is_empty() {
        return writeln!(out, "<p class=\"muted\">none watched yet</p>");
    }
    writeln!(
        out,
        "<table id=\"folders\"><tr><th>folder</th><th>watched with</th></tr>"
    )?;
    for folder in &snapshot.watched {
        writeln!(
            out,
            "<tr><td class=\"name\">{}</td><td class=\"ok\">{}</td></tr>",
            name(&folder.path),
            html(&folder.mode)
        )?;
    }
    for folder in &snapshot.missing {
        if snapshot.watched.iter().any(|w| w.path == folder.path) {
            continue;
        }
        writeln!(
            out,
            "<tr><td class=\"name\">{}</td><td class=\"bad\">not watched: {}</td></tr>",
            name(&folder.path),
            html(&escaped(&folder.why).to_string())
        )?;
    }
    writeln!(out, "</table>")?;
    for folder in &snapshot.not_answering {
        writeln!(
            out,
            "<p class=\"bad\">{}</p>",
            html(&crate::status_report::not_answering_line(folder))
        )?;
    }
    for (folder, agents) in &snapshot.agents {
        writeln!(
            out,
            "<h3>Agents on {}</h3>\n<ul class=\"agents\">",
            name(folder)
        )?;
        for agent in agents {
            writeln!(
                out,
                "<li>{}</li>",
                html(&crate::status_report::describe_agent(agent))
            )?;
        }
        writeln!(out, "</ul>")?;
    }
    Ok(())
}

fn write_uploading(out: &mut String, snapshot: &StatusSnapshot) -> fmt::Result {
    writeln!(out, "<h2>Uploading</h2>")?;
    let uploading: Vec<&Job> = snapshot
        .unfinished
        .iter()
        .filter(|job| job.state == JobState::Uploading)
        .collect();
    if uploading.is_empty() {
        return writeln!(out, "<p class=\"muted\">nothing uploading</p>");
    }
    writeln!(
        out,
        "<table id=\"uploading\"><tr><th>file</th><th>progress</th><th>chunk</th><th>rate</th><th>video</th></tr>"
    )?;
    for job in uploading {
        let percent = (job.bytes_sent.min(job.size) * 100)
            .checked_div(job.size)
            .unwrap_or(0);
        let chunks = format!(
            "{}/{}",
            job.next_chunk.saturating_sub(1),
            job.total_chunks
                .map_or_else(|| "?".to_owned(), |t| t.to_string())
        );
        let state = snapshot.shown_state(job);
        let note = if state == "trying" {
            "<br><span class=\"muted\">trying whether the platform is back</span>"
        } else {
            ""
        };
        writeln!(
            out,
            "<tr><td class=\"name\">{}{note}</td><td><progress max=\"100\" value=\"{percent}\">{percent}%</progress> {percent}% of {}</td>\
             <td>{chunks}</td><td>{}</td><td>{}</td></tr>",
            name(&job.path),
            human_size(job.size),
            bytes_per_second(job).map_or_else(|| "-".to_owned(), human_rate),
            html(job.video_id.as_deref().unwrap_or("-")),
        )?;
    }
    writeln!(out, "</table>")
}

fn write_queued(out: &mut String, snapshot: &StatusSnapshot) -> fmt::Result {
    let queued: Vec<&Job> = snapshot
        .unfinished
        .iter()
        .filter(|job| job.state != JobState::Uploading)
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    writeln!(out, "<h2>Queued</h2>")?;
    writeln!(
        out,
        "<table id=\"queued\"><tr><th>state</th><th>file</th><th>size</th><th>why</th></tr>"
    )?;
    for job in queued.iter().take(QUEUED_SHOWN) {
        let state = snapshot.shown_state(job);
        let why = match job.state {
            JobState::Paused => job.pause_reason.as_deref().unwrap_or("no reason recorded"),
            JobState::Waiting if state == "paused" => "held until uploads resume",
            JobState::Finishing => "being moved to done/ or failed/",
            _ => "",
        };
        writeln!(
            out,
            "<tr><td>{state}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td></tr>",
            name(&job.path),
            human_size(job.size),
            html(why)
        )?;
    }
    writeln!(out, "</table>")?;
    if queued.len() > QUEUED_SHOWN {
        writeln!(
            out,
            "<p class=\"muted\">… and {} more (<a href=\"/api/status\">/api/status</a> lists them all)</p>",
            queued.len() - QUEUED_SHOWN
        )?;
    }
    Ok(())
}

fn write_settling(out: &mut String, snapshot: &StatusSnapshot, clock: &ReportClock) -> fmt::Result {
    if snapshot.settling.is_empty() {
        return Ok(());
    }
    writeln!(out, "<h2>Settling</h2>")?;
    writeln!(
        out,
        "<table id=\"settling\"><tr><th>file</th><th>size</th><th>unchanged since</th><th>waiting for</th></tr>"
    )?;
    for file in snapshot.settling.iter().take(SETTLING_SHOWN) {
        let waiting = match &file.waiting_for {
            Some(what) => html(&escaped(what).to_string()),
            None => format!(
                "complete at {} if it stays so",
                clock.show(file.since + file.stable_for)
            ),
        };
        writeln!(
            out,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{waiting}</td></tr>",
            name(&file.path),
            human_size(file.size),
            clock.show(file.since),
        )?;
    }
    writeln!(out, "</table>")?;
    if snapshot.settling.len() > SETTLING_SHOWN {
        writeln!(
            out,
            "<p class=\"muted\">… and {} more</p>",
            snapshot.settling.len() - SETTLING_SHOWN
        )?;
    }
    Ok(())
}

fn write_transcoding(
    out: &mut String,
    snapshot: &StatusSnapshot,
    clock: &ReportClock,
) -> fmt::Result {
    if snapshot.transcoding.is_empty() {
        return Ok(());
    }
    writeln!(out, "<h2>Transcoding followed</h2>")?;
    writeln!(
        out,
        "<table id=\"transcoding\"><tr><th>file</th><th>video</th><th>uploaded</th><th>the platform says</th></tr>"
    )?;
    for video in snapshot.transcoding.iter().take(QUEUED_SHOWN) {
        writeln!(
            out,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            name(&video.path),
            html(&escaped(&video.video_id).to_string()),
            clock.ago(video.since),
            html(&crate::status_report::transcoding_said(video))
        )?;
    }
    writeln!(out, "</table>")?;
    if snapshot.transcoding.len() > QUEUED_SHOWN {
        writeln!(
            out,
            "<p class=\"muted\">… and {} more (<a href=\"/api/status\">/api/status</a> lists them all)</p>",
            snapshot.transcoding.len() - QUEUED_SHOWN
        )?;
    }
    Ok(())
}

fn write_recent(out: &mut String, snapshot: &StatusSnapshot, clock: &ReportClock) -> fmt::Result {
    writeln!(out, "<h2>Recently finished</h2>")?;
    if snapshot.recent.is_empty() {
        return writeln!(out, "<p class=\"muted\">nothing yet</p>");
    }
    writeln!(
        out,
        "<table id=\"recent\"><tr><th>when</th><th></th><th>file</th><th>video</th><th>details</th></tr>"
    )?;
    for job in &snapshot.recent {
        let at = job.finished_at.unwrap_or(job.updated_at);
        let (class, label, details) = match job.state {
            JobState::Done => (
                "ok",
                "done",
                bytes_per_second(job)
                    .map(|rate| format!("{} at {}", human_size(job.size), human_rate(rate)))
                    .unwrap_or_else(|| human_size(job.size)),
            ),
            JobState::Failed => (
                "bad",
                "failed",
                job.error.as_ref().map_or_else(String::new, |error| {
                    if error.meaning.contains(&error.message) {
                        error.meaning.clone()
                    } else {
                        format!("{} ({})", error.meaning, error.message)
                    }
                }),
            ),
            _ => (
                "muted",
                "gone",
                crate::status_report::gone_reason(job).to_owned(),
            ),
        };
        let moved_to = job
            .destination
            .as_deref()
            .map(|d| format!("<br><span class=\"muted\">→ {}</span>", name(d)))
            .unwrap_or_default();
        writeln!(
            out,
            "<tr><td>{} <span class=\"muted\">({})</span></td><td class=\"{class}\">{label}</td>\
             <td class=\"name\">{}{moved_to}</td><td>{}</td><td>{}</td></tr>",
            clock.show(at),
            clock.ago(at),
            name(&job.rel_path),
            html(job.video_id.as_deref().unwrap_or("-")),
            html(&details),
        )?;
    }
    writeln!(out, "</table>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_shown_not_parsed() {
        assert_eq!(
            html("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        // Control characters are shown as `status` shows them, then made safe.
        assert_eq!(
            name(std::path::Path::new("a\n<b>.mov")),
            "a\\n&lt;b&gt;.mov"
        );
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style() {
        let policy = content_security_policy();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!policy.contains("script-src"));
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        assert!(policy.contains(&hash));
        assert!(
            !STYLE.contains("</"),
            "the style cannot end its element early"
        );
    }
}
