//! `result_xml = true`: `<video file name>.xml` beside the moved video, in the FTP ingest's
//! result format, so scripts that read the FTP Output folder keep working:
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8" standalone="yes"?>
//! <result fileName="clip.mov" reference="abc" jobReference="…" xmlns="…/ingest/ftp/result.xsd">
//!     <success>
//!         <videoTitle>My Video</videoTitle>
//!         <video id="ABcd1234"/>
//!     </success>
//! </result>
//! ```
//!
//! The documentation shows only the success form; a failure is written as
//! `<error><message>…</message></error>` in the same namespace (hotfolder's choice, documented
//! in the README).

use super::RESULT_NAMESPACE;

/// How the upload ended, for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultOutcome {
    Success { video_id: String, title: String },
    Error { message: String },
}

/// What the result XML says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadResult {
    /// The video's name as it was delivered.
    pub file_name: String,
    /// The companion's `reference`, when it had one.
    pub reference: Option<String>,
    /// An id of this upload (the FTP ingest's `jobReference`).
    pub job_reference: String,
    pub outcome: ResultOutcome,
}

impl UploadResult {
    /// The document, UTF-8.
    pub fn to_xml(&self) -> String {
        let mut out =
            String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n");
        out.push_str(&format!("<result fileName=\"{}\"", escape(&self.file_name)));
        if let Some(reference) = &self.reference {
            out.push_str(&format!(" reference=\"{}\"", escape(reference)));
        }
        out.push_str(&format!(
            " jobReference=\"{}\" xmlns=\"{RESULT_NAMESPACE}\">\n",
            escape(&self.job_reference)
        ));
        match &self.outcome {
            ResultOutcome::Success { video_id, title } => {
                out.push_str("    <success>\n");
                out.push_str(&format!(
                    "        <videoTitle>{}</videoTitle>\n",
                    escape(title)
                ));
                out.push_str(&format!("        <video id=\"{}\"/>\n", escape(video_id)));
                out.push_str("    </success>\n");
            }
            ResultOutcome::Error { message } => {
                out.push_str("    <error>\n");
                out.push_str(&format!("        <message>{}</message>\n", escape(message)));
                out.push_str("    </error>\n");
            }
        }
        out.push_str("</result>\n");
        out
    }
}

/// Text and attribute values: the five characters XML gives meaning to, and control
/// characters XML 1.0 cannot carry at all (left out).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push_str(&format!("&#{};", u32::from(c))),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_result_xml_matches_the_documentation_sample() {
        let result = UploadResult {
            file_name: "myVideo.mp4".into(),
            reference: Some("MyReference".into()),
            job_reference: "123abc45-abcd-67ef-89ab-1234ab567890".into(),
            outcome: ResultOutcome::Success {
                video_id: "ABcd1234efGH5678jk90ab".into(),
                title: "My Video".into(),
            },
        };
        // The documentation's sample (ftpupload.md), byte for byte.
        let sample = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<result fileName="myVideo.mp4" reference="MyReference" jobReference="123abc45-abcd-67ef-89ab-1234ab567890" xmlns="http://schemas.video-cdn.net/vmpro/public/v1/ingest/ftp/result.xsd">
    <success>
        <videoTitle>My Video</videoTitle>
        <video id="ABcd1234efGH5678jk90ab"/>
    </success>
</result>
"#;
        assert_eq!(result.to_xml(), sample);
    }

    #[test]
    fn metadata_result_xml_escapes_names_and_messages() {
        let result = UploadResult {
            file_name: "a&b \"c\".mp4".into(),
            reference: None,
            job_reference: "j".into(),
            outcome: ResultOutcome::Error {
                message: "<bad>".into(),
            },
        };
        let xml = result.to_xml();
        assert!(
            xml.contains(r#"fileName="a&amp;b &quot;c&quot;.mp4""#),
            "{xml}"
        );
        assert!(xml.contains("<message>&lt;bad&gt;</message>"), "{xml}");
        assert!(!xml.contains("reference=\"\""), "{xml}");
        let parsed = crate::metadata::job_xml::parse(&xml);
        // Well-formed: the job reader gets as far as the root's namespace.
        assert!(
            matches!(
                parsed,
                Err(crate::metadata::job_xml::JobXmlError::NotAJob(_))
            ),
            "{parsed:?}"
        );
    }
}
