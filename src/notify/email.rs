//! E-mail through `[smtp]`: the events one destination is owed, batched into one plain-text
//! message (a burst of 500 failures is one mail, not 500), over STARTTLS (`smtp://`) or TLS
//! (`smtps://`). There is no plain way: with `smtp://` a server that does not offer STARTTLS
//! gets neither the login nor the message.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use super::event::{EventKind, Notice, host_name};
use super::webhook::Answer;
use crate::config::{SmtpSecurity, SmtpSettings};
use crate::escape::escaped;
use crate::store::PendingNotice;

/// How long one conversation with the mail server may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The most events one message covers; a larger burst is several messages. A batch stays
/// open at most 10 minutes, in which the API budget lets about a thousand files fail.
pub(super) const MAX_PER_MESSAGE: usize = 5000;

/// How many events a message shows one by one; the rest are counted.
pub(super) const EVENTS_DETAILED: usize = 50;

/// How many files a subject names before "and N more".
const FILES_IN_SUBJECT: usize = 3;

/// One e-mail destination: the server and the addresses.
pub(super) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `smtp://host:587/…`, for messages.
    server: String,
}

impl Mailer {
    pub(super) fn new(smtp: &SmtpSettings, to: &[String]) -> Result<Mailer, String> {
        let mut tls = TlsParameters::builder(smtp.host.clone());
        if let Some(pem) = &smtp.ca_pem {
            let ca = Certificate::from_pem(pem)
                .map_err(|err| format!("smtp.ca_file holds no usable certificate: {err}"))?;
            tls = tls.add_root_certificate(ca);
        }
        let tls = tls
            .build_rustls()
            .map_err(|err| format!("cannot set up TLS for the mail server: {err}"))?;
        let tls = match smtp.security {
            // Required: no STARTTLS offered, no login and no message.
            SmtpSecurity::StartTls => Tls::Required(tls),
            SmtpSecurity::Tls => Tls::Wrapper(tls),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT))
            .hello_name(ClientId::Domain(host_name().to_owned()));
        if let Some((user, secret)) = &smtp.login {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                secret.value.expose_secret().to_owned(),
            ));
        }
        let from = smtp
            .from
            .parse::<Mailbox>()
            .map_err(|err| format!("smtp.from: {err}"))?;
        let to = to
            .iter()
            .map(|address| {
                address
                    .parse::<Mailbox>()
                    .map_err(|err| format!("{address:?}: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
            server: smtp.url.masked(),
        })
    }

    /// Sends one message listing `pending`. Every failure is tried again (until the events are
    /// too old): a refused login or a full mailbox is fixed by a person, not by dropping.
    pub(super) async fn send(&self, pending: &[PendingNotice]) -> Answer {
        let notices: Vec<&Notice> = pending.iter().map(|p| &p.notice).collect();
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject(&notices))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = match message.body(text(&notices)) {
            Ok(message) => message,
            Err(err) => return Answer::Refused(format!("cannot make the message: {err}")),
        };
        match self.transport.send(message).await {
            Ok(_) => Answer::Delivered,
            Err(err) => Answer::Failed {
                why: format!(
                    "the mail server {} {}",
                    self.server,
                    describe_smtp_error(&err)
                ),
                retry_after: None,
            },
        }
    }
}

/// What went wrong, in words; a server without STARTTLS is named as such.
fn describe_smtp_error(err: &lettre::transport::smtp::Error) -> String {
    let text = crate::chain(err);
    if text.to_ascii_lowercase().contains("starttls") || text.contains("TLS") && err.is_client() {
        format!("{text} (SMTP never logs in nor sends without TLS)")
    } else {
        text
    }
}

/// `hotfolder on edit-bay-3: failed: a.mov`, or for a batch
/// `hotfolder on edit-bay-3: 498 failed, 2 uploaded: a.mov, b.mov, c.mov and 497 more`.
pub(super) fn subject(notices: &[&Notice]) -> String {
    let counts = counts(notices);
    let what = if notices.len() == 1 {
        notices[0].event.clone()
    } else {
        counts
            .iter()
            .map(|(event, n)| format!("{n} {event}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut names: Vec<String> = Vec::new();
    for notice in notices {
        let name = notice.file.as_ref().or(notice.folder.as_ref());
        if let Some(name) = name
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    let mut subject = format!("hotfolder on {}: {what}", host_name());
    if !names.is_empty() {
        let shown: Vec<String> = names
            .iter()
            .take(FILES_IN_SUBJECT)
            .map(|n| escaped(n).to_string())
            .collect();
        subject.push_str(": ");
        subject.push_str(&shown.join(", "));
        if names.len() > FILES_IN_SUBJECT {
            subject.push_str(&format!(" and {} more", names.len() - FILES_IN_SUBJECT));
        }
    } else if let Some(reason) = notices.first().and_then(|n| n.reason.as_ref()) {
        subject.push_str(": ");
        subject.push_str(&escaped(reason).to_string());
    }
    subject
}

/// The message: how many events of each kind, then one paragraph per event, oldest first,
/// for the first [`EVENTS_DETAILED`], and how many more there are.
pub(super) fn text(notices: &[&Notice]) -> String {
    let mut out = format!(
        "hotfolder on {} reports {} event{}",
        host_name(),
        notices.len(),
        if notices.len() == 1 { "" } else { "s" }
    );
    let counts = counts(notices);
    if counts.len() > 1 || notices.len() > 1 {
        let list: Vec<String> = counts
            .iter()
            .map(|(event, n)| format!("{n} {event}"))
            .collect();
        out.push_str(&format!(" ({})", list.join(", ")));
    }
    out.push_str(":\n");
    for notice in notices.iter().take(EVENTS_DETAILED) {
        let what = match notice.kind() {
            Some(EventKind::Paused) => "uploads paused".to_owned(),
            Some(EventKind::Resumed) => "uploads resumed".to_owned(),
            _ => notice.event.clone(),
        };
        out.push_str(&format!("\n{}  {what}", notice.at));
        if let Some(file) = &notice.file {
            out.push_str(&format!("  {}", escaped(file)));
        }
        out.push('\n');
        let mut field = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push_str(&format!("  {name}: {}\n", escaped(&value)));
            }
        };
        field("folder", notice.folder.clone());
        field("reason", notice.reason.clone());
        field("video id", notice.video_id.clone());
        field(
            "size",
            notice
                .size
                .map(|s| crate::config::human_size(s).to_string()),
        );
        field("sha256", notice.sha256.clone());
        field("event id", Some(notice.id.clone()));
    }
    if notices.len() > EVENTS_DETAILED {
        let more = notices.len() - EVENTS_DETAILED;
        let last = notices[notices.len() - 1];
        out.push_str(&format!(
            "\n... and {more} more event{} up to {}: `hotfolder failed` on {} lists the failed \
             files with their reasons, and its log has every event.\n",
            if more == 1 { "" } else { "s" },
            last.at,
            host_name()
        ));
    }
    out
}

/// Each kind of event and how many of it, in the order they first came.
fn counts<'a>(notices: &[&'a Notice]) -> Vec<(&'a str, usize)> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for notice in notices {
        match counts.iter_mut().find(|(event, _)| *event == notice.event) {
            Some((_, n)) => *n += 1,
            None => counts.push((&notice.event, 1)),
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(file: &str) -> Notice {
        let mut notice = Notice::new(EventKind::Failed, time::OffsetDateTime::now_utc());
        notice.file = Some(file.into());
        notice.reason = Some("415: not a video".into());
        notice
    }

    #[test]
    fn a_subject_names_host_event_and_files() {
        let one = failed("sub/a.mov");
        assert_eq!(
            subject(&[&one]),
            format!("hotfolder on {}: failed: sub/a.mov", host_name())
        );
        let many: Vec<Notice> = (0..500).map(|i| failed(&format!("f{i}.txt"))).collect();
        let mut refs: Vec<&Notice> = many.iter().collect();
        let mut uploaded = Notice::new(EventKind::Uploaded, time::OffsetDateTime::now_utc());
        uploaded.file = Some("ok.mov".into());
        refs.push(&uploaded);
        assert_eq!(
            subject(&refs),
            format!(
                "hotfolder on {}: 500 failed, 1 uploaded: f0.txt, f1.txt, f2.txt and 498 more",
                host_name()
            )
        );
        let mut paused = Notice::new(EventKind::Paused, time::OffsetDateTime::now_utc());
        paused.reason = Some("network down\nreally".into());
        assert_eq!(
            subject(&[&paused]),
            format!(
                "hotfolder on {}: paused: network down\\nreally",
                host_name()
            )
        );
    }

    #[test]
    fn the_text_lists_each_event_with_its_reason() {
        let a = failed("a.mov");
        let b = failed("b\u{202e}vom.txt");
        let body = text(&[&a, &b]);
        assert!(body.contains("reports 2 events (2 failed):"), "{body}");
        assert!(body.contains("failed  a.mov"), "{body}");
        assert!(body.contains("b\\u{202e}vom.txt"), "{body}");
        assert!(body.contains(&format!("event id: {}", a.id)), "{body}");
        assert_eq!(body.matches("reason: 415: not a video").count(), 2);
    }

    #[test]
    fn a_large_batch_shows_its_counts_and_the_first_events_and_says_how_many_more() {
        let mut many: Vec<Notice> = (0..120).map(|i| failed(&format!("f{i}.txt"))).collect();
        let mut uploaded = Notice::new(EventKind::Uploaded, time::OffsetDateTime::now_utc());
        uploaded.file = Some("ok.mov".into());
        many.push(uploaded);
        let refs: Vec<&Notice> = many.iter().collect();
        let body = text(&refs);
        assert!(
            body.starts_with(&format!(
                "hotfolder on {} reports 121 events (120 failed, 1 uploaded):",
                host_name()
            )),
            "{body}"
        );
        assert!(body.contains("failed  f0.txt\n"), "{body}");
        assert!(body.contains("failed  f49.txt\n"), "{body}");
        assert!(!body.contains("f50.txt"), "{body}");
        assert!(body.contains("... and 71 more events up to "), "{body}");
        assert_eq!(body.matches("event id: ").count(), EVENTS_DETAILED);
    }

    #[test]
    fn a_non_ascii_subject_is_an_rfc_2047_encoded_word() {
        let notice = failed("Café – Schnitt 3.mov");
        let message = Message::builder()
            .from("hotfolder@studio.example".parse().unwrap())
            .to("ops@studio.example".parse().unwrap())
            .subject(subject(&[&notice]))
            .header(ContentType::TEXT_PLAIN)
            .body(text(&[&notice]))
            .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(head.is_ascii(), "{head}");
        let subject = head
            .lines()
            .find(|line| line.starts_with("Subject: "))
            .unwrap();
        assert!(subject.contains("=?utf-8?b?"), "{subject}");
    }
}
