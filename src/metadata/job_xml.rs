//! Reads movingimage's FTP ingest *job XML* (`<job xmlns="…/ingest/ftp/job.xsd">`) with a pull
//! parser, checking the schema's rules that matter before anything is created: `source/file`
//! present, not empty, without `/` or `\`; channel ids positive integers; `groupId` and
//! `securityPolicyId` integers; no element that may occur once given twice. No DTD and no
//! entity beyond XML's five and character references: a companion comes from outside.
//!
//! What it holds that hotfolder cannot apply (a still, a publish period, a delete time, a
//! security policy, `inform`, `indexVideo`, elements it does not know) is listed in
//! [`FileMetadata::not_applied`], never dropped in silence.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{FileMetadata, JOB_NAMESPACE};

/// A job XML, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobXml {
    /// `source/file`: the video's name in the same folder.
    pub source_file: String,
    /// The `reference` attribute, returned in the result XML.
    pub reference: Option<String>,
    pub metadata: FileMetadata,
}

/// Why a job XML is refused, in words for the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobXmlError {
    #[error("it is not well-formed XML: {0}")]
    Malformed(String),
    #[error("it has a DOCTYPE; DTDs and entities are not accepted in a job XML")]
    Doctype,
    #[error(
        "it uses the entity &{0}; only XML's own (&amp; &lt; &gt; &quot; &apos;) and character references are accepted"
    )]
    Entity(String),
    #[error("its root element is <{0}>, not <job> in the namespace {JOB_NAMESPACE}")]
    NotAJob(String),
    #[error("<source><file> is missing; the schema requires it (the name of the video)")]
    NoSource,
    #[error("<source><file> is {0:?}; it must be a file name without / or \\")]
    BadSource(String),
    #[error("<{element}> is {value:?}; {expected}")]
    BadValue {
        element: String,
        value: String,
        expected: &'static str,
    },
    #[error("<{0}> is given more than once; the schema allows it once")]
    Repeated(String),
    #[error("<channels> lists no <id>; the schema requires at least one (or leave <channels> out)")]
    NoChannel,
    #[error(
        "it contains the control character U+{0:04X}; a companion's text may not hold control characters (tab and line breaks aside)"
    )]
    ControlCharacter(u32),
    #[error("its elements are nested more than {MAX_DEPTH} deep; a job XML needs five")]
    TooDeep,
    #[error("it has more than {MAX_ELEMENTS} elements; a job XML needs a few dozen")]
    TooManyElements,
}

/// How deep elements may nest in a job XML (the schema needs five levels): deeper is refused
/// before it costs anything.
pub const MAX_DEPTH: usize = 64;

/// How many elements a job XML may have (the schema's job has a few dozen; keywords, channels
/// and custom fields a few hundred at most).
pub const MAX_ELEMENTS: usize = 10_000;

/// Reads `text` as a job XML.
#[cfg(test)]
pub fn parse(text: &str) -> Result<JobXml, JobXmlError> {
    parse_detailed(text).map_err(|refused| refused.error)
}

/// A job XML refused, with the video it names when that could be read (a wrong value
/// elsewhere does not hide which video the job was for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub error: JobXmlError,
    pub source_file: Option<String>,
}

/// [`parse`], saying which video a refused job XML names when it can.
pub fn parse_detailed(text: &str) -> Result<JobXml, Refused> {
    let mut first_error: Option<JobXmlError> = None;
    let mut job = Builder::default();
    let outcome = read_job(text, &mut job, &mut first_error);
    let source_file = job.source_file.clone();
    let refused = |error| Refused { error, source_file };
    match (outcome, first_error) {
        (Err(error), _) | (Ok(()), Some(error)) => Err(refused(error)),
        (Ok(()), None) => job.finish().map_err(refused),
    }
}

/// Reads `text` into `job`. A wrong value (`first_error`) does not stop the reading, so that
/// `source/file` is known; a file that cannot be read on (`Err`) does.
fn read_job(
    text: &str,
    job: &mut Builder,
    first_error: &mut Option<JobXmlError>,
) -> Result<(), JobXmlError> {
    // Raw control characters (a NUL, an ESC) are not XML; they would reach titles and logs.
    refuse_control_characters(text)?;
    let mut keep = |result: Result<(), JobXmlError>| -> Result<(), JobXmlError> {
        match result {
            Err(err @ JobXmlError::NotAJob(_)) => Err(err),
            Err(err) => {
                first_error.get_or_insert(err);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    };
    let mut reader = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    // The text of the element being read (its own text, children's aside).
    let mut texts: Vec<String> = Vec::new();
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(|err| {
            JobXmlError::Malformed(format!("{err} (near byte {})", reader.error_position()))
        })?;
        match event {
            Event::DocType(_) => return Err(JobXmlError::Doctype),
            Event::Start(start) => {
                count_element(&mut elements, path.len())?;
                keep(job.open(&path, &start))?;
                path.push(local_name(&start));
                texts.push(String::new());
            }
            Event::Empty(start) => {
                count_element(&mut elements, path.len())?;
                keep(job.open(&path, &start))?;
                path.push(local_name(&start));
                keep(job.close(&path, ""))?;
                path.pop();
            }
            Event::End(_) => {
                let text = texts.pop().unwrap_or_default();
                keep(job.close(&path, text.trim()))?;
                path.pop();
            }
            Event::Text(text) => {
                if let Some(current) = texts.last_mut() {
                    current.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(current) = texts.last_mut() {
                    current.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference)?;
                if let Some(current) = texts.last_mut() {
                    current.push(resolved);
                }
            }
            Event::Eof => {
                // A job XML cut short (still being written, or a copy that stopped) must not
                // pass with what it has so far.
                if let Some(open) = path.last() {
                    return Err(JobXmlError::Malformed(format!(
                        "it ends before </{open}>: the file is incomplete"
                    )));
                }
                break;
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    Ok(())
}

/// A control character in `text`, other than tab, line feed and carriage return: refused.
pub(crate) fn refuse_control_characters(text: &str) -> Result<(), JobXmlError> {
    match text.chars().find(|c| is_forbidden_control(*c)) {
        Some(c) => Err(JobXmlError::ControlCharacter(u32::from(c))),
        None => Ok(()),
    }
}

/// C0 controls but tab, LF and CR; DEL; C1 controls.
pub(crate) fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Counts one more element opened at `depth` (its parents), refusing the file past the limits.
fn count_element(elements: &mut usize, depth: usize) -> Result<(), JobXmlError> {
    *elements += 1;
    if depth >= MAX_DEPTH {
        return Err(JobXmlError::TooDeep);
    }
    if *elements > MAX_ELEMENTS {
        return Err(JobXmlError::TooManyElements);
    }
    Ok(())
}

fn local_name(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.local_name().as_ref().as_bytes()).into_owned()
}

/// XML's five entities and character references; any other entity would need a DTD.
fn resolve_reference(reference: &quick_xml::events::BytesRef<'_>) -> Result<char, JobXmlError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) if is_forbidden_control(c) => {
                Err(JobXmlError::ControlCharacter(u32::from(c)))
            }
            Ok(Some(c)) => Ok(c),
            _ => Err(JobXmlError::Malformed(format!(
                "&{}; is not a valid character reference",
                &**reference
            ))),
        };
    }
    match &**reference {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(JobXmlError::Entity(other.to_owned())),
    }
}

/// The job as it is read, element by element.
#[derive(Default)]
struct Builder {
    root_seen: bool,
    reference: Option<String>,
    source_file: Option<String>,
    metadata: FileMetadata,
    /// The `name` of the custom metadata element being read.
    custom_name: Option<String>,
    /// A multiselect's options so far.
    options: Vec<String>,
    /// `<publish>` had a `<period>`.
    publish_period: Option<(String, String)>,
    publish_given: bool,
    /// Elements that may occur once, seen so far.
    seen_once: Vec<String>,
}

impl Builder {
    fn open(&mut self, path: &[String], start: &BytesStart<'_>) -> Result<(), JobXmlError> {
        let name = local_name(start);
        if path.is_empty() {
            if self.root_seen {
                return Err(JobXmlError::Malformed("more than one root element".into()));
            }
            self.root_seen = true;
            let mut namespace_ok = false;
            // The root's own namespace: `xmlns` for `<job>`, `xmlns:p` for `<p:job>`; a prefix
            // declared for the job namespace does not make an unprefixed root a job.
            let qualified = String::from_utf8_lossy(start.name().as_ref().as_bytes()).into_owned();
            let declaration = match qualified.split_once(':') {
                Some((prefix, _)) => format!("xmlns:{prefix}"),
                None => "xmlns".to_owned(),
            };
            for attribute in start.attributes() {
                let attribute = attribute.map_err(|err| JobXmlError::Malformed(err.to_string()))?;
                let key = String::from_utf8_lossy(attribute.key.as_ref().as_bytes()).into_owned();
                let value = attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|err| JobXmlError::Malformed(err.to_string()))?
                    .into_owned();
                if key == declaration && value == JOB_NAMESPACE {
                    namespace_ok = true;
                } else if key == "reference" {
                    refuse_control_characters(&value)?;
                    self.reference = Some(value);
                }
            }
            if name != "job" || !namespace_ok {
                return Err(JobXmlError::NotAJob(name));
            }
            return Ok(());
        }
        let parent = path.join("/");
        match (parent.as_str(), name.as_str()) {
            ("job/customMetadata", "field" | "select" | "multiselect") => {
                self.custom_name = attribute(start, "name")?;
                self.options.clear();
            }
            ("job/actions/release", "publish") => self.publish_given = true,
            _ => {}
        }
        if parent == "job" && !matches!(name.as_str(), "keywords" | "channels") {
            if self.seen_once.contains(&name) {
                return Err(JobXmlError::Repeated(name));
            }
            self.seen_once.push(name);
        } else if parent == "job/source" && name == "file" {
            // One video per job: a second <file> would silently win over the first.
            let once = "source/file".to_owned();
            if self.seen_once.contains(&once) {
                return Err(JobXmlError::Repeated(once));
            }
            self.seen_once.push(once);
        }
        Ok(())
    }

    fn close(&mut self, path: &[String], text: &str) -> Result<(), JobXmlError> {
        let at = path.join("/");
        let metadata = &mut self.metadata;
        match at.as_str() {
            "job"
            | "job/source"
            | "job/keywords"
            | "job/customMetadata"
            | "job/actions"
            | "job/actions/release"
            | "job/actions/delete"
            | "job/still"
            | "job/inform"
            | "job/actions/release/publish/period" => {}
            "job/channels" => {
                if metadata.channels.is_empty() {
                    return Err(JobXmlError::NoChannel);
                }
            }
            "job/source/file" => {
                if text.is_empty() || text.contains(['/', '\\']) || text == "." || text == ".." {
                    return Err(JobXmlError::BadSource(text.to_owned()));
                }
                self.source_file = Some(text.to_owned());
            }
            "job/title" => metadata.title = Some(text.to_owned()),
            "job/description" => metadata.description = Some(text.to_owned()),
            "job/keywords/keyword" => {
                let list = metadata.keywords.get_or_insert_with(Vec::new);
                if !text.is_empty() {
                    list.push(text.to_owned());
                }
            }
            "job/channels/id" => metadata.channels.push(positive_id("channels/id", text)?),
            "job/groupId" => metadata.group = Some(integer("groupId", text)?),
            "job/securityPolicyId" => {
                integer("securityPolicyId", text)?;
                metadata.not_applied.push(format!(
                    "securityPolicyId {text}: hotfolder does not set security policies; the video gets the VideoManager's default"
                ));
            }
            "job/customMetadata/field" | "job/customMetadata/select" => {
                let name = self.custom_name.take().unwrap_or_default();
                metadata.custom_metadata.insert(name, text.to_owned());
            }
            "job/customMetadata/multiselect/option" => self.options.push(text.to_owned()),
            "job/customMetadata/multiselect" => {
                let name = self.custom_name.take().unwrap_or_default();
                metadata
                    .custom_metadata
                    .insert(name, std::mem::take(&mut self.options).join(","));
            }
            "job/actions/release/publish/period/begin" => {
                self.publish_period.get_or_insert_default().0 = text.to_owned();
            }
            "job/actions/release/publish/period/end" => {
                self.publish_period.get_or_insert_default().1 = text.to_owned();
            }
            "job/actions/release/publish" => {}
            "job/actions/release/download" => metadata
                .not_applied
                .push("actions/release/download: hotfolder does not release downloads".into()),
            "job/actions/delete/time" => metadata.not_applied.push(format!(
                "actions/delete/time {text}: hotfolder does not schedule deletions"
            )),
            "job/still/file" => metadata.not_applied.push(format!(
                "still {text}: hotfolder does not upload stills; the platform picks one"
            )),
            "job/inform/email" => metadata.not_applied.push(format!(
                "inform {text}: use hotfolder's [[notify]] for e-mails about uploads"
            )),
            _ if at.starts_with("job/indexVideo/")
                || at.starts_with("job/ingestActions/")
                || at.starts_with("job/subtitles/") => {}
            "job/indexVideo" => metadata
                .not_applied
                .push("indexVideo: hotfolder does not request indexing".into()),
            "job/onlineTranscoding" => metadata
                .not_applied
                .push("onlineTranscoding: not requested by hotfolder".into()),
            "job/ingestActions" => metadata.not_applied.push(
                "ingestActions: the FTP server's clean-up; hotfolder moves files to done/ instead"
                    .into(),
            ),
            "job/subtitles" => metadata
                .not_applied
                .push("subtitles: hotfolder does not upload subtitles".into()),
            other => {
                // Only the element itself is named once, not each of its children.
                let depth = other.matches('/').count();
                if depth == 1 {
                    metadata.not_applied.push(format!(
                        "<{}>: not an element hotfolder knows",
                        other.trim_start_matches("job/")
                    ));
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<JobXml, JobXmlError> {
        if !self.root_seen {
            return Err(JobXmlError::Malformed("no root element".into()));
        }
        let source_file = self.source_file.ok_or(JobXmlError::NoSource)?;
        if self.publish_given {
            match self.publish_period {
                None => self.metadata.publish = Some(true),
                Some((begin, end)) => self.metadata.not_applied.push(format!(
                    "actions/release/publish/period {begin} to {end}: hotfolder does not schedule a time-controlled release"
                )),
            }
        }
        Ok(JobXml {
            source_file,
            reference: self.reference,
            metadata: self.metadata,
        })
    }
}

fn attribute(start: &BytesStart<'_>, wanted: &str) -> Result<Option<String>, JobXmlError> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|err| JobXmlError::Malformed(err.to_string()))?;
        if attribute.key.as_ref().as_bytes() == wanted.as_bytes() {
            let value = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| JobXmlError::Malformed(err.to_string()))?;
            refuse_control_characters(&value)?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

fn integer(element: &str, text: &str) -> Result<u64, JobXmlError> {
    text.parse().map_err(|_| JobXmlError::BadValue {
        element: element.to_owned(),
        value: text.to_owned(),
        expected: "it must be a whole number",
    })
}

fn positive_id(element: &str, text: &str) -> Result<u64, JobXmlError> {
    match text.parse::<u64>() {
        Ok(id) if id > 0 && !text.starts_with(['0', '+']) => Ok(id),
        _ => Err(JobXmlError::BadValue {
            element: element.to_owned(),
            value: text.to_owned(),
            expected: "it must be a positive whole number",
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The sample job XML of movingimage's FTP ingest documentation (`xml.md`), with its own
    /// values.
    pub(crate) const DOCUMENTATION_SAMPLE: &str =
        include_str!("../../tests/fixtures/ftp-job-sample.xml");

    #[test]
    fn metadata_the_documentation_sample_reads_with_every_field() {
        let job = parse(DOCUMENTATION_SAMPLE).unwrap();
        assert_eq!(job.source_file, "video001.mp4");
        assert_eq!(job.reference.as_deref(), Some("abc"));
        let m = &job.metadata;
        assert_eq!(m.title.as_deref(), Some("FtpImportMetaData"));
        assert!(m.description.as_deref().unwrap().starts_with("Lorem ipsum"));
        assert_eq!(m.channels, vec![3054]);
        assert_eq!(
            m.keywords,
            Some(vec!["summer".to_string(), "autumn".to_string()])
        );
        assert_eq!(m.group, Some(2233));
        assert_eq!(
            m.custom_metadata
                .get("production company")
                .map(String::as_str),
            Some("MGM")
        );
        // A period is not an immediate publish.
        assert_eq!(m.publish, None);
        let not_applied = m.not_applied.join("\n");
        for what in [
            "securityPolicyId 950",
            "publish/period 2019-07-01T09:00:00+02:00",
            "download",
            "delete/time 2019-08-02",
            "still Chysathemum.jpg",
            "inform employee.name@company.com",
            "ingestActions",
        ] {
            assert!(not_applied.contains(what), "{what} in {not_applied}");
        }
    }

    #[test]
    fn metadata_an_empty_publish_publishes_at_once() {
        let text = format!(
            r#"<job xmlns="{JOB_NAMESPACE}"><source><file>a.mp4</file></source><actions><release><publish/></release></actions></job>"#
        );
        assert_eq!(parse(&text).unwrap().metadata.publish, Some(true));
    }

    #[test]
    fn metadata_job_xml_refusals_say_what_is_wrong() {
        let job = |inner: &str| format!(r#"<job xmlns="{JOB_NAMESPACE}">{inner}</job>"#);
        let cases = [
            (job("<title>x</title>"), "source><file> is missing"),
            (job("<source><file>a/b.mp4</file></source>"), "without /"),
            (job("<source><file>a\\b.mp4</file></source>"), "without /"),
            (job("<source><file></file></source>"), "without /"),
            (job("<source><file>..</file></source>"), "without /"),
            (
                job("<source><file>a.mp4</file></source><channels><id>0</id></channels>"),
                "positive whole number",
            ),
            (
                job("<source><file>a.mp4</file></source><groupId>abc</groupId>"),
                "whole number",
            ),
            (
                job("<source><file>a.mp4</file></source><title>a</title><title>b</title>"),
                "more than once",
            ),
            (
                job("<source><file>a.mp4</file></source><channels></channels>"),
                "no <id>",
            ),
            (
                job("<source><file>a.mp4</file><file>b.mp4</file></source>"),
                "<source/file> is given more than once",
            ),
            (job("<source><file>a.mp4</file></source"), "well-formed"),
            (
                format!(r#"<job xmlns="{JOB_NAMESPACE}"><source><file>a.mp4</file></source>"#),
                "ends before </job>",
            ),
            (
                "<job><source><file>a.mp4</file></source></job>".to_string(),
                "not <job> in the namespace",
            ),
            (
                format!(
                    r#"<!DOCTYPE job [<!ENTITY x "y">]><job xmlns="{JOB_NAMESPACE}"><source><file>a.mp4</file></source></job>"#
                ),
                "DOCTYPE",
            ),
            (
                job("<source><file>a.mp4</file></source><title>&x;</title>"),
                "entity &x;",
            ),
            (
                format!(
                    r#"<job xmlns="{JOB_NAMESPACE}" reference="&x;"><source><file>a.mp4</file></source></job>"#
                ),
                "well-formed",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn metadata_a_deeply_nested_or_huge_job_xml_is_refused_at_once() {
        // 140 000 levels under 1 MiB: refused at the 64th, not parsed in quadratic time.
        let deep = format!(
            r#"<job xmlns="{JOB_NAMESPACE}"><source><file>n.mp4</file></source>{}{}</job>"#,
            "<a>".repeat(140_000),
            "</a>".repeat(140_000)
        );
        let started = std::time::Instant::now();
        let err = parse(&deep).unwrap_err();
        assert_eq!(err, JobXmlError::TooDeep);
        assert!(err.to_string().contains("nested more than 64"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // 64 levels of the schema's own are not reached by a real job XML.
        let ok = format!(
            r#"<job xmlns="{JOB_NAMESPACE}"><source><file>n.mp4</file></source>{}{}</job>"#,
            "<a>".repeat(50),
            "</a>".repeat(50)
        );
        assert!(parse(&ok).is_ok());
        let wide = format!(
            r#"<job xmlns="{JOB_NAMESPACE}"><source><file>n.mp4</file></source><x>{}</x></job>"#,
            "<a/>".repeat(200_000)
        );
        let started = std::time::Instant::now();
        assert_eq!(parse(&wide).unwrap_err(), JobXmlError::TooManyElements);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn metadata_the_root_must_be_in_the_job_namespace_and_control_characters_are_refused() {
        let wrong_root = format!(
            r#"<job xmlns:x="{JOB_NAMESPACE}" xmlns="urn:wrong"><source><file>a.mp4</file></source></job>"#
        );
        assert!(matches!(parse(&wrong_root), Err(JobXmlError::NotAJob(_))));
        let prefixed = format!(
            r#"<x:job xmlns:x="{JOB_NAMESPACE}"><x:source><x:file>a.mp4</x:file></x:source></x:job>"#
        );
        assert_eq!(parse(&prefixed).unwrap().source_file, "a.mp4");
        let job = |inner: &str| {
            format!(
                r#"<job xmlns="{JOB_NAMESPACE}"><source><file>a.mp4</file></source>{inner}</job>"#
            )
        };
        for text in [
            job("<title>a\u{1}b</title>"),
            job("<title>a\u{1b}[31mb</title>"),
            job("<title>a&#1;b</title>"),
            job("<title>a&#x9F;b</title>"),
            format!(
                r#"<job xmlns="{JOB_NAMESPACE}"><source><file>a{}.mp4</file></source></job>"#,
                '\0'
            ),
            format!(
                r#"<job xmlns="{JOB_NAMESPACE}" reference="a&#27;b"><source><file>a.mp4</file></source></job>"#
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(
                err.to_string().contains("control character"),
                "{text:?}: {err}"
            );
        }
        // Tabs and line breaks are text.
        assert!(parse(&job("<description>a\tb\r\nc&#10;</description>")).is_ok());
    }

    #[test]
    fn metadata_xml_entities_and_character_references_are_read() {
        let text = format!(
            r#"<job xmlns="{JOB_NAMESPACE}"><source><file>a.mp4</file></source><title>Tom &amp; Jerry &#233;</title></job>"#
        );
        assert_eq!(
            parse(&text).unwrap().metadata.title.as_deref(),
            Some("Tom & Jerry é")
        );
    }
}
