//! `hotfolder emulator`: the emulator as a command, for trying configurations and integrations
//! offline. [`EmulatorArgs`] are its command-line flags and [`run_cli`] runs it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::state::DEFAULT_VIDEO_MANAGER_ID;
use super::{Emulator, EmulatorOptions, Faults, PlatformRefusal};

/// Flags of `hotfolder emulator`. Durations read like `10s` or `4h`, sizes like `512 MiB`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// User name the emulator accepts.
    #[arg(long, default_value = "demo")]
    pub username: String,
    /// Password the emulator accepts.
    #[arg(long, default_value = "demo-password")]
    pub password: String,
    /// Lifetime of access tokens (keycloak's expires_in).
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    #[arg(long, value_name = "DURATION", default_value = "3600s", value_parser = parse_duration)]
    pub refresh_ttl: Duration,
    /// Lifetime of an upload URL's __token__.
    #[arg(long, value_name = "DURATION", default_value = "4h", value_parser = parse_duration)]
    pub url_ttl: Duration,
    /// Refuse an upload URL (403) after this many chunk posts.
    #[arg(long, value_name = "N")]
    pub url_max_chunks: Option<u32>,
    /// Every renewed upload URL gets a new fileId and the video's content starts over.
    #[arg(long)]
    pub new_file_id_on_renew: bool,
    /// Answer 201 to every chunk instead of 202 until the last.
    #[arg(long)]
    pub created_on_every_chunk: bool,
    /// Answer the upload-URL request with 200 instead of 201.
    #[arg(long)]
    pub url_status_ok: bool,
    /// Send the legacy login's validForVideoManager as a string.
    #[arg(long)]
    pub legacy_vm_id_as_string: bool,
    /// Storage quota across all videos; beyond it uploads get code 1101.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub quota: Option<u64>,
    /// API calls allowed per minute (the platform allows 100); unlimited when absent.
    #[arg(long, value_name = "N")]
    pub api_requests_per_minute: Option<u32>,
    /// Share of requests answered 500/502/503/504 (0.0 ..= 1.0).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Share of chunk posts whose connection is dropped mid-body.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,
    /// Share of chunk posts stored but never answered (connection dropped).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub lost_ack_rate: f64,
    /// Share of requests held for --stall before they are handled.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub stall_rate: f64,
    /// How long a stalled request waits (longer than the client's request timeout).
    #[arg(long, value_name = "DURATION", default_value = "130s", value_parser = parse_duration)]
    pub stall: Duration,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_rate: f64,
    /// Seconds in the Retry-After of a throttled answer.
    #[arg(long = "retry-after", value_name = "SECONDS", default_value_t = 5)]
    pub retry_after: u64,
    /// Answer each create-video call this long after the video was created (a slow platform).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub create_answer_delay: Option<Duration>,
    /// Refuse every request of a kind alike, as a misconfigured account or a platform in
    /// maintenance does.
    #[arg(long, value_name = "KIND", value_enum)]
    pub platform_refusal: Option<PlatformRefusal>,
    /// A VideoManager id that exists (repeat for more); others are answered 404. Without it,
    /// every numeric id exists.
    #[arg(long = "video-manager", value_name = "ID")]
    pub video_managers: Vec<u64>,
    /// Share of create-video calls that create the video and are then answered 504.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub lost_create_rate: f64,
    /// A new video is missing from video searches for this long (a lagging search index).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub search_lag: Option<Duration>,
    /// A video's last quality is transcoded this long after its upload (the others before).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub transcode_after: Duration,
    /// Transcoding never finishes (for trying what a client does when it waits in vain).
    #[arg(long, conflicts_with = "transcode_after")]
    pub transcoding_never_finishes: bool,
    /// Seed of the fault RNG: the same seed repeats the same faults for the same requests.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Check chunks (headers, order, length) and count them, but do not hash them: for
    /// measuring a client rather than the emulator. Videos then have no sha256.
    #[arg(long)]
    pub sink: bool,
    /// Model a long-distance link: delay every answer this long (e.g. 40ms).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub latency: Duration,
    /// Model a long-distance link: read the chunk bodies of all connections together at most
    /// this fast (e.g. 1Gbit/s, 100MiB/s); the socket backs up as a real link's would.
    #[arg(long, value_name = "RATE", value_parser = parse_link_rate)]
    pub link_rate: Option<u64>,
    /// Refuse chunks larger than this with 413 Payload Too Large (e.g. 8MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_chunk_size: Option<u64>,
    /// Answer those refusals with 400 "Request Entity Too Large" instead of 413, as some
    /// proxies do.
    #[arg(long, requires = "max_chunk_size")]
    pub too_large_as_400: bool,
    /// Refuse the Nth chunk post (1-based, every upload's counted) with 413 whatever its size,
    /// once: a proxy's hiccup, not a size limit.
    #[arg(long, value_name = "N")]
    pub too_large_on_post: Option<u64>,
}

impl EmulatorArgs {
    pub fn options(&self) -> EmulatorOptions {
        EmulatorOptions {
            username: self.username.clone(),
            password: self.password.clone(),
            access_ttl: self.access_ttl,
            refresh_ttl: self.refresh_ttl,
            url_ttl: self.url_ttl,
            url_max_chunks: self.url_max_chunks,
            new_file_id_on_renew: self.new_file_id_on_renew,
            created_on_every_chunk: self.created_on_every_chunk,
            url_status_ok: self.url_status_ok,
            legacy_vm_id_as_string: self.legacy_vm_id_as_string,
            quota_bytes: self.quota,
            api_requests_per_minute: self.api_requests_per_minute,
            create_answer_delay: self.create_answer_delay,
            video_managers: self.video_managers.clone(),
            search_lag: self.search_lag,
            transcode_after: (!self.transcoding_never_finishes).then_some(self.transcode_after),
            sink: self.sink,
            latency: self.latency,
            link_rate: self.link_rate,
            max_chunk_size: self.max_chunk_size,
            too_large_as_400: self.too_large_as_400,
            too_large_on_post: self.too_large_on_post,
            faults: Faults {
                seed: self.seed,
                error_rate: self.error_rate,
                reset_rate: self.reset_rate,
                lost_ack_rate: self.lost_ack_rate,
                stall_rate: self.stall_rate,
                stall: self.stall,
                throttle_rate: self.throttle_rate,
                retry_after_secs: self.retry_after,
                platform_refusal: self.platform_refusal,
                lost_create_rate: self.lost_create_rate,
            },
        }
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

/// Runs the emulator until `shutdown`, after printing where it listens and a config snippet.
pub async fn run_cli(args: &EmulatorArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let options = args.options();
    let emulator = Emulator::start(args.listen(), options.clone())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen()))?;
    // The emulator serves whether or not anyone reads where it listens.
    if let Err(err) = crate::console::outln!("{}", banner(&emulator, &options)) {
        tracing::warn!("{}", crate::chain(&err));
    }
    shutdown.cancelled().await;
    emulator.shutdown().await;
    Ok(())
}

fn banner(emulator: &Emulator, options: &EmulatorOptions) -> String {
    let toml_string = |text: &str| toml::Value::String(text.to_owned()).to_string();
    format!(
        "VideoManager Pro emulator listening on {base}\n\
         \n  api_url    {api}\n  token_url  {token}\n  username   {user}\n  password   {password}\n\
         \x20 {known}; the legacy login names {vm}\n\
         \x20 {base}_emulator/videos and {base}_emulator/stats show what it received\n\
         {modelled}\
         \nConfig snippet:\n\n\
         [account]\n\
         api_url = {api_toml}\n\
         token_url = {token_toml}\n\
         username = {user_toml}\n\
         password = {password_toml}\n\
         video_manager_id = {vm}\n\
         \nCtrl-C stops it.",
        base = emulator.base_url(),
        api = emulator.api_url(),
        token = emulator.token_url(),
        user = options.username,
        password = options.password,
        vm = DEFAULT_VIDEO_MANAGER_ID,
        known = if options.video_managers.is_empty() {
            "any numeric video manager id is accepted".to_owned()
        } else {
            let ids: Vec<String> = options.video_managers.iter().map(u64::to_string).collect();
            format!("video manager ids: {}", ids.join(", "))
        },
        modelled = modelled(options),
        api_toml = toml_string(emulator.api_url().as_str()),
        token_toml = toml_string(emulator.token_url().as_str()),
        user_toml = toml_string(&options.username),
        password_toml = toml_string(&options.password),
    )
}

/// The banner's lines for the options that make it more than a fast, strict platform.
fn modelled(options: &EmulatorOptions) -> String {
    let mut lines = String::new();
    if options.sink {
        lines.push_str(
            "  sink: chunks are checked and counted, not hashed (videos get no sha256)\n",
        );
    }
    if options.link_rate.is_some() || !options.latency.is_zero() {
        let rate = options.link_rate.map_or("unlimited".to_owned(), |rate| {
            crate::config::format_bandwidth(rate, true)
        });
        lines.push_str(&format!(
            "  link: {} per answer, {rate} shared by all connections\n",
            humantime::format_duration(options.latency)
        ));
    }
    if let Some(max) = options.max_chunk_size {
        lines.push_str(&format!(
            "  chunks over {} are refused with {}\n",
            crate::config::human_size(max),
            if options.too_large_as_400 {
                "400 \"Request Entity Too Large\""
            } else {
                "413"
            }
        ));
    }
    if let Some(post) = options.too_large_on_post {
        lines.push_str(&format!(
            "  chunk post {post} is refused with 413 whatever its size\n"
        ));
    }
    lines
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (write e.g. 10s, 500ms, 4h)"))
}

/// `1Gbit/s`, `400 Mbit/s`, `100MiB/s`: as the config's `bandwidth_limit` reads rates.
fn parse_link_rate(text: &str) -> Result<u64, String> {
    let rate = crate::bandwidth::Bandwidth::parse(text)?;
    if rate.bytes_per_second == 0 {
        return Err("a link rate must be more than 0".to_owned());
    }
    Ok(rate.bytes_per_second)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not a rate between 0.0 and 1.0"))
    }
}

/// `512 MiB`, `2GB`, `1000`: decimal and binary units, case-insensitive.
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (write e.g. 512 MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    let bytes = number * factor as f64;
    if bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64 {
        Ok(bytes.round() as u64)
    } else {
        Err(format!("{text:?} is out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    fn parse(flags: &[&str]) -> Result<EmulatorArgs, clap::Error> {
        let argv = std::iter::once("emulator").chain(flags.iter().copied());
        Command::try_parse_from(argv).map(|command| command.args)
    }

    #[test]
    fn defaults_match_the_emulator_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen().to_string(), "127.0.0.1:8080");
        let options = args.options();
        let defaults = EmulatorOptions::default();
        assert_eq!(options.username, defaults.username);
        assert_eq!(options.password, defaults.password);
        assert_eq!(options.access_ttl, defaults.access_ttl);
        assert_eq!(options.url_ttl, defaults.url_ttl);
        assert_eq!(options.quota_bytes, None);
        assert_eq!(options.faults.error_rate, 0.0);
        assert_eq!(options.transcode_after, defaults.transcode_after);
    }

    #[test]
    fn flags_reach_the_options() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--url-ttl",
            "10s",
            "--quota",
            "512 MiB",
            "--error-rate",
            "0.25",
            "--stall",
            "500ms",
            "--retry-after",
            "3",
            "--seed",
            "42",
            "--new-file-id-on-renew",
            "--search-lag",
            "2s",
            "--lost-create-rate",
            "0.5",
            "--create-answer-delay",
            "7s",
            "--platform-refusal",
            "create-forbidden",
            "--video-manager",
            "7",
            "--video-manager",
            "8",
        ])
        .unwrap();
        let options = args.options();
        assert_eq!(
            options.faults.platform_refusal,
            Some(PlatformRefusal::CreateForbidden)
        );
        assert_eq!(options.video_managers, [7, 8]);
        assert_eq!(options.search_lag, Some(Duration::from_secs(2)));
        assert_eq!(options.faults.lost_create_rate, 0.5);
        assert_eq!(options.create_answer_delay, Some(Duration::from_secs(7)));
        assert_eq!(options.url_ttl, Duration::from_secs(10));
        assert_eq!(options.quota_bytes, Some(512 * 1024 * 1024));
        assert_eq!(options.faults.error_rate, 0.25);
        assert_eq!(options.faults.stall, Duration::from_millis(500));
        assert_eq!(options.faults.retry_after_secs, 3);
        assert_eq!(options.faults.seed, 42);
        assert!(options.new_file_id_on_renew);
        assert!(!options.sink);
        assert_eq!((options.latency, options.link_rate), (Duration::ZERO, None));

        let quick = parse(&["--transcode-after", "2s"]).unwrap().options();
        assert_eq!(quick.transcode_after, Some(Duration::from_secs(2)));
        let never = parse(&["--transcoding-never-finishes"]).unwrap().options();
        assert_eq!(never.transcode_after, None);
    }

    #[test]
    fn link_flags_reach_the_options() {
        let options = parse(&[
            "--sink",
            "--latency",
            "40ms",
            "--link-rate",
            "1Gbit/s",
            "--max-chunk-size",
            "8MiB",
        ])
        .unwrap()
        .options();
        assert!(options.sink);
        assert_eq!(options.latency, Duration::from_millis(40));
        assert_eq!(options.link_rate, Some(125_000_000));
        assert_eq!(options.max_chunk_size, Some(8 << 20));
        assert!(parse(&["--link-rate", "0 Mbit/s"]).is_err());
        assert!(parse(&["--link-rate", "fast"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--error-rate", "1.5"]).is_err());
        assert!(parse(&["--quota", "12 parsecs"]).is_err());
        assert!(parse(&["--url-ttl", "soon"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("8 MiB"), Ok(8 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert!(parse_size("MiB").is_err());
    }

    #[tokio::test]
    async fn run_cli_serves_until_shutdown_and_names_a_busy_address() {
        let shutdown = CancellationToken::new();
        let args = parse(&["--listen", "127.0.0.1:0"]).unwrap();
        let running = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { run_cli(&args, shutdown).await }
        });
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let args = parse(&["--listen", &addr]).unwrap();
        let error = run_cli(&args, CancellationToken::new()).await.unwrap_err();
        assert!(format!("{error:#}").contains(&addr), "{error:#}");
    }

    #[tokio::test]
    async fn banner_has_a_pasteable_account_table() {
        let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default())
            .await
            .unwrap();
        let text = banner(&emulator, &EmulatorOptions::default());
        let snippet = text
            .split("Config snippet:")
            .nth(1)
            .unwrap()
            .split("Ctrl-C")
            .next()
            .unwrap();
        let parsed: toml::Table = toml::from_str(snippet).unwrap();
        let account = parsed["account"].as_table().unwrap();
        assert_eq!(
            account["api_url"].as_str(),
            Some(emulator.api_url().as_str())
        );
        assert_eq!(account["password"].as_str(), Some("demo-password"));
        assert_eq!(account["video_manager_id"].as_integer(), Some(12345));
        emulator.shutdown().await;
    }
}
