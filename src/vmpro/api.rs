//! The two API calls of an upload: create the video entity, fetch its upload URL.

/// What the platform stores about a new video, filled from the folder's config.
/// Fields that are `None` (or empty) are left out of the create-video body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoMetadata {
    /// Title template: `{stem}` is the file name without its suffix, `{name}` the whole name.
    pub title: String,
    pub description: Option<String>,
    pub channel: Option<u64>,
    pub group: Option<u64>,
    pub keywords: Vec<String>,
    pub auto_publish: Option<bool>,
}

/// File suffixes the platform accepts (lower case); others are answered `415`.
pub const PLATFORM_SUFFIXES: &[&str] = &[
    "mp4", "mov", "flv", "wmv", "mpg", "avi", "mp3", "mpeg", "m4v", "vob", "f4v", "wav", "3gp",
    "rm", "mts", "m2v", "wma", "mxf", "m2p", "m2t", "mkv", "webm", "qt", "mp2", "m2ts", "ogv",
];
