//! The built-in VideoManager Pro emulator seen from outside, as a client (and curl) sees it:
//! logins, the four upload steps, every refusal the protocol names, and each injected fault.

use std::net::SocketAddr;
use std::time::Duration;

use hotfolder::{Emulator, EmulatorOptions, EmulatorStats, Faults, PlatformRefusal, VideoRecord};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{content, sha256_hex, start_emulator, text};

const VM: u64 = 12345;

fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn keycloak_login(client: &Client, emulator: &Emulator, password: &str) -> Response {
    client
        .post(emulator.token_url())
        .form(&[
            ("client_id", "anonymous"),
            ("grant_type", "password"),
            ("response_type", "token"),
            ("scope", "openid"),
            ("username", "demo"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

async fn access_token(client: &Client, emulator: &Emulator) -> String {
    let answer = keycloak_login(client, emulator, "demo-password").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn create_video(client: &Client, emulator: &Emulator, token: &str, body: Value) -> Response {
    client
        .post(format!("{}{VM}/videos", emulator.api_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A logged-in client with one new video: what most chunk tests start from.
struct Upload {
    client: Client,
    token: String,
    video_id: String,
}

impl Upload {
    async fn new(emulator: &Emulator) -> Upload {
        let client = client();
        let token = access_token(&client, emulator).await;
        let answer = create_video(&client, emulator, &token, json!({"fileName": "clip.mp4"})).await;
        assert_eq!(answer.status(), StatusCode::CREATED);
        let location = answer.headers()["location"].to_str().unwrap().to_owned();
        let video_id = location.rsplit('/').next().unwrap().to_owned();
        Upload {
            client,
            token,
            video_id,
        }
    }

    async fn url_answer(&self, emulator: &Emulator) -> Response {
        self.client
            .get(format!(
                "{}{VM}/videos/{}/url",
                emulator.api_url(),
                self.video_id
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn upload_url(&self, emulator: &Emulator) -> String {
        let answer = self.url_answer(emulator).await;
        assert_eq!(answer.status(), StatusCode::CREATED);
        answer.headers()["location"].to_str().unwrap().to_owned()
    }

    async fn chunk(
        &self,
        url: &str,
        total: u32,
        current: u32,
        bytes: &[u8],
    ) -> reqwest::Result<Response> {
        self.client
            .post(url)
            .header("Mi24-Upload-Total-Chunks", total.to_string())
            .header("Mi24-Upload-Current-Chunk", current.to_string())
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
    }

    async fn chunk_status(&self, url: &str, total: u32, current: u32, bytes: &[u8]) -> StatusCode {
        self.chunk(url, total, current, bytes)
            .await
            .unwrap()
            .status()
    }

    fn record(&self, emulator: &Emulator) -> VideoRecord {
        emulator.video(&self.video_id).unwrap()
    }
}

fn emulator_addr(emulator: &Emulator) -> SocketAddr {
    emulator.base_url().socket_addrs(|| None).unwrap()[0]
}

/// Sends raw bytes on a fresh connection and returns whatever comes back until the server
/// closes it (an error such as a reset counts as "nothing came back").
async fn raw_exchange(emulator: &Emulator, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(emulator_addr(emulator)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer
}

fn path_and_query(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!("{}?{}", url.path(), url.query().unwrap())
}

#[tokio::test]
async fn keycloak_login_refresh_and_expiry() {
    let emulator = start_emulator(EmulatorOptions {
        access_ttl: Duration::from_millis(300),
        refresh_ttl: Duration::from_millis(300),
        ..EmulatorOptions::default()
    })
    .await;
    let client = client();

    let refused = keycloak_login(&client, &emulator, "wrong").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "Invalid user credentials");

    let answer = keycloak_login(&client, &emulator, "demo-password").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let tokens: Value = answer.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 1, "300 ms reads as 1 s, never 0");
    assert!(tokens["refresh_expires_in"].is_u64());
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert!(!access.contains("demo-password") && access != refresh);

    let created = create_video(&client, &emulator, access, json!({"fileName": "a.mp4"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);

    let renewed: Value = client
        .post(emulator.token_url())
        .form(&[
            ("client_id", "anonymous"),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_access = renewed["access_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert!(renewed["refresh_token"].is_string());

    let unknown = client
        .post(emulator.token_url())
        .form(&[
            ("client_id", "anonymous"),
            ("grant_type", "refresh_token"),
            ("refresh_token", "made-up"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    let expired = create_video(&client, &emulator, new_access, json!({"fileName": "a.mp4"})).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(expired.json::<Value>().await.unwrap()["message"].is_string());
    let stale_refresh = client
        .post(emulator.token_url())
        .form(&[
            ("client_id", "anonymous"),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stale_refresh.status(), StatusCode::BAD_REQUEST);

    let stats = emulator.stats();
    assert_eq!(
        (stats.logins, stats.logins_refused, stats.refreshes),
        (1, 1, 1)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn password_change_refuses_the_old_password() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = client();
    emulator.set_password("rotated");
    let old = keycloak_login(&client, &emulator, "demo-password").await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = keycloak_login(&client, &emulator, "rotated").await;
    assert_eq!(new.status(), StatusCode::OK);
    emulator.shutdown().await;
}

#[tokio::test]
async fn legacy_login_and_refresh() {
    for as_string in [false, true] {
        let emulator = start_emulator(EmulatorOptions {
            legacy_vm_id_as_string: as_string,
            ..EmulatorOptions::default()
        })
        .await;
        let client = client();
        let login = |password: &'static str| {
            client
                .post(format!("{}auth/login", emulator.api_url()))
                .json(&json!({"username": "demo", "password": password}))
                .send()
        };
        let refused = login("wrong").await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.json::<Value>().await.unwrap()["message"].is_string());

        let answer = login("demo-password").await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        let expected_vm = if as_string {
            json!("12345")
        } else {
            json!(12345)
        };
        assert_eq!(body["validForVideoManager"], expected_vm);
        assert_eq!(body["videoManagerList"][0]["id"], 12345);
        let access = body["accessToken"].as_str().unwrap();
        let created = create_video(&client, &emulator, access, json!({"fileName": "a.mp4"})).await;
        assert_eq!(created.status(), StatusCode::CREATED);

        let refreshed: Value = client
            .post(format!("{}auth/refresh/{VM}", emulator.api_url()))
            .json(&json!({"refreshToken": body["refreshToken"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let new_access = refreshed["accessToken"].as_str().unwrap();
        // Any numeric video manager id is accepted with the token.
        let elsewhere = client
            .post(format!("{}777/videos", emulator.api_url()))
            .bearer_auth(new_access)
            .json(&json!({"fileName": "b.mkv"}))
            .send()
            .await
            .unwrap();
        assert_eq!(elsewhere.status(), StatusCode::CREATED);
        let not_numeric = client
            .post(format!("{}abc/videos", emulator.api_url()))
            .bearer_auth(new_access)
            .json(&json!({"fileName": "b.mkv"}))
            .send()
            .await
            .unwrap();
        assert_eq!(not_numeric.status(), StatusCode::BAD_REQUEST);
        emulator.shutdown().await;
    }
}

#[tokio::test]
async fn three_chunks_are_answered_202_202_201_and_hashed() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = client();
    let token = access_token(&client, &emulator).await;
    let answer = create_video(
        &client,
        &emulator,
        &token,
        json!({
            "fileName": "Interview Take 3.MOV",
            "title": "Interview",
            "description": "take 3",
            "keywords": ["studio", "raw"],
            "channel": 123,
            "group": 45,
            "autoPublish": false
        }),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(answer.bytes().await.unwrap().is_empty());
    let video_id = location
        .strip_prefix(&format!("{}{VM}/videos/", emulator.api_url()))
        .unwrap()
        .to_owned();
    assert!(video_id.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(video_id.parse::<u64>().is_err(), "ids are not numbers");
    let upload = Upload {
        client,
        token,
        video_id,
    };

    let url = upload.upload_url(&emulator).await;
    assert!(url.starts_with(&format!(
        "{}chunks/vms/{VM}/videos/{}?bucketId=",
        emulator.base_url(),
        upload.video_id
    )));
    assert!(url.contains("&fileId=") && url.contains("&userId=") && url.contains("&__token__="));

    let chunks = [content(3000, 1), content(3000, 2), content(1234, 3)];
    let mut statuses = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        statuses.push(upload.chunk_status(&url, 3, i as u32 + 1, chunk).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::CREATED
        ]
    );

    let record = upload.record(&emulator);
    assert!(record.complete);
    assert_eq!(record.sha256, Some(sha256_hex(&chunks.concat())));
    assert_eq!(record.bytes_received, 7234);
    assert_eq!(
        (record.total_chunks, record.chunks_received, record.restarts),
        (Some(3), 3, 0)
    );
    assert_eq!(record.file_name, "Interview Take 3.MOV");
    assert_eq!(record.title.as_deref(), Some("Interview"));
    assert_eq!(record.keywords, ["studio", "raw"]);
    assert_eq!(
        (record.channel, record.group, record.auto_publish),
        (Some(123), Some(45), Some(false))
    );

    // The scripting endpoints answer the same as the library.
    let listed: Vec<VideoRecord> = upload
        .client
        .get(format!("{}_emulator/videos", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, emulator.videos());
    let stats: EmulatorStats = upload
        .client
        .get(format!("{}_emulator/stats", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, emulator.stats());
    assert_eq!(
        (
            stats.chunk_posts,
            stats.bytes_received,
            stats.videos_created,
            stats.urls_issued
        ),
        (3, 7234, 1, 1)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_documented_curl_session_works() {
    let curl_found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !curl_found {
        hotfolder::test_skipped(format_args!("no curl binary on PATH"));
        return;
    }
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let upload_url = upload.upload_url(&emulator).await;
    let dir = tempfile::tempdir().unwrap();
    // Bodies over 1 KiB make curl send `Expect: 100-continue`, which hyper must honour.
    let parts = [content(2 << 20, 1), content(2 << 20, 2), content(999, 3)];
    let mut statuses = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let path = dir.path().join("part");
        std::fs::write(&path, part).unwrap();
        let current = (i + 1).to_string();
        let url = upload_url.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--noproxy",
                    "*",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .args(["-X", "POST"])
                .args(["-H", "Mi24-Upload-Total-Chunks: 3"])
                .args(["-H", &format!("Mi24-Upload-Current-Chunk: {current}")])
                .args(["-H", "Content-Type:application/octet-stream"])
                .arg("--data-binary")
                .arg(format!("@{}", path.display()))
                .arg(url)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        statuses.push(text(&output.stdout));
    }
    assert_eq!(statuses, ["202", "202", "201"]);
    assert_eq!(
        upload.record(&emulator).sha256,
        Some(sha256_hex(&parts.concat()))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn chunks_out_of_order_are_refused_with_409() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let skipped = upload.chunk(&url, 9, 2, b"abc").await.unwrap();
    assert_eq!(skipped.status(), StatusCode::CONFLICT);
    assert_eq!(
        skipped.json::<Value>().await.unwrap()["message"],
        "chunk 2 out of order: expected 1"
    );
    assert_eq!(
        upload.chunk_status(&url, 9, 1, b"abc").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        upload.chunk_status(&url, 9, 2, b"def").await,
        StatusCode::ACCEPTED
    );
    let ahead = upload.chunk(&url, 9, 7, b"ghi").await.unwrap();
    assert_eq!(ahead.status(), StatusCode::CONFLICT);
    assert_eq!(
        ahead.json::<Value>().await.unwrap()["message"],
        "chunk 7 out of order: expected 3"
    );
    // A changed total for the same upload is a malformed request.
    assert_eq!(
        upload.chunk_status(&url, 8, 3, b"ghi").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(upload.record(&emulator).chunks_received, 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn resending_the_last_chunk_is_idempotent() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let chunks = [content(500, 1), content(500, 2), content(10, 3)];
    // Every chunk sent twice, as after a lost answer: the same status both times.
    let expected = [
        StatusCode::ACCEPTED,
        StatusCode::ACCEPTED,
        StatusCode::CREATED,
    ];
    for (index, (chunk, status)) in (1..).zip(chunks.iter().zip(expected)) {
        for send in ["first", "second"] {
            assert_eq!(
                upload.chunk_status(&url, 3, index, chunk).await,
                status,
                "the {send} send of chunk {index}"
            );
        }
    }
    let record = upload.record(&emulator);
    assert_eq!(record.sha256, Some(sha256_hex(&chunks.concat())));
    assert_eq!((record.bytes_received, record.restarts), (1010, 0));
    // Different bytes under the number of the last chunk are not a resend.
    assert_eq!(
        upload.chunk_status(&url, 3, 3, &content(10, 9)).await,
        StatusCode::CONFLICT
    );
    // Chunk 1 always starts the content over.
    assert_eq!(
        upload.chunk_status(&url, 3, 1, &chunks[1]).await,
        StatusCode::ACCEPTED
    );
    let record = upload.record(&emulator);
    assert_eq!(
        (
            record.complete,
            record.sha256,
            record.restarts,
            record.bytes_received
        ),
        (false, None, 1, 500)
    );
    emulator.shutdown().await;
}

/// Request headers as name/value pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn chunk_headers_are_checked() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let post = |headers: Headers| {
        let mut request = upload.client.post(&url).body("x");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let octet = ("Content-Type", "application/octet-stream");
    let cases: [(Headers, StatusCode); 7] = [
        (
            &[("Mi24-Upload-Current-Chunk", "1"), octet],
            StatusCode::BAD_REQUEST,
        ),
        (
            &[("Mi24-Upload-Total-Chunks", "1"), octet],
            StatusCode::BAD_REQUEST,
        ),
        (
            &[
                ("Mi24-Upload-Total-Chunks", "2"),
                ("Mi24-Upload-Current-Chunk", "0"),
                octet,
            ],
            StatusCode::BAD_REQUEST,
        ),
        (
            &[
                ("Mi24-Upload-Total-Chunks", "2"),
                ("Mi24-Upload-Current-Chunk", "3"),
                octet,
            ],
            StatusCode::BAD_REQUEST,
        ),
        (
            &[
                ("Mi24-Upload-Total-Chunks", "+2"),
                ("Mi24-Upload-Current-Chunk", "1"),
                octet,
            ],
            StatusCode::BAD_REQUEST,
        ),
        (
            &[
                ("Mi24-Upload-Total-Chunks", "2"),
                ("Mi24-Upload-Current-Chunk", "1"),
                ("Content-Type", "text/plain"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            &[
                ("Mi24-Upload-Total-Chunks", "2"),
                ("Mi24-Upload-Current-Chunk", "1"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (headers, expected) in cases {
        let answer = post(headers).await.unwrap();
        assert_eq!(answer.status(), expected, "{headers:?}");
        assert!(answer.json::<Value>().await.unwrap()["message"].is_string());
    }
    assert_eq!(upload.record(&emulator).chunks_received, 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_chunk_needs_a_content_length_and_a_body() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let request = |framing: &str| {
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nMi24-Upload-Total-Chunks: 1\r\n\
             Mi24-Upload-Current-Chunk: 1\r\nContent-Type: application/octet-stream\r\n\
             Connection: close\r\n{framing}",
            path_and_query(&url),
            emulator_addr(&emulator)
        )
    };
    let chunked = request("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let answer = String::from_utf8(raw_exchange(&emulator, chunked.as_bytes()).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    let empty = request("Content-Length: 0\r\n\r\n");
    let answer = String::from_utf8(raw_exchange(&emulator, empty.as_bytes()).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("empty chunk"), "{answer}");
    assert_eq!(upload.record(&emulator).chunks_received, 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn create_video_refusals() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = client();
    let token = access_token(&client, &emulator).await;

    let text = create_video(&client, &emulator, &token, json!({"fileName": "notes.txt"})).await;
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        text.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("notes.txt")
    );
    let upper = create_video(&client, &emulator, &token, json!({"fileName": "A.MXF"})).await;
    assert_eq!(upper.status(), StatusCode::CREATED);
    let nameless = create_video(&client, &emulator, &token, json!({"title": "x"})).await;
    assert_eq!(nameless.status(), StatusCode::BAD_REQUEST);
    let empty = create_video(&client, &emulator, &token, json!({"fileName": ""})).await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let malformed = client
        .post(format!("{}{VM}/videos", emulator.api_url()))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body("{\"fileName\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let anonymous = client
        .post(format!("{}{VM}/videos", emulator.api_url()))
        .json(&json!({"fileName": "a.mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let upload = Upload::new(&emulator).await;
    let missing = upload
        .client
        .get(format!("{}{VM}/videos/nosuchvideo/url", emulator.api_url()))
        .bearer_auth(&upload.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(emulator.videos().len(), 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn storage_quota_answers_1101() {
    let emulator = start_emulator(EmulatorOptions {
        quota_bytes: Some(1000),
        ..EmulatorOptions::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    assert_eq!(
        upload.chunk_status(&url, 2, 1, &content(600, 1)).await,
        StatusCode::ACCEPTED
    );
    let over = upload.chunk(&url, 2, 2, &content(600, 2)).await.unwrap();
    assert_eq!(over.status(), StatusCode::FORBIDDEN);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["code"], 1101);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("storage capacity")
    );
    assert_eq!(upload.record(&emulator).bytes_received, 600);

    emulator.set_quota(Some(600));
    let full = create_video(
        &upload.client,
        &emulator,
        &upload.token,
        json!({"fileName": "b.mp4"}),
    )
    .await;
    assert_eq!(full.status(), StatusCode::FORBIDDEN);
    assert_eq!(full.json::<Value>().await.unwrap()["code"], 1101);

    emulator.set_quota(None);
    assert_eq!(
        upload.chunk_status(&url, 2, 2, &content(600, 2)).await,
        StatusCode::CREATED
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn upload_url_is_used_up_after_url_max_chunks() {
    let emulator = start_emulator(EmulatorOptions {
        url_max_chunks: Some(2),
        ..EmulatorOptions::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    assert_eq!(
        upload.chunk_status(&url, 3, 1, b"abc").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        upload.chunk_status(&url, 3, 2, b"def").await,
        StatusCode::ACCEPTED
    );
    let used_up = upload.chunk(&url, 3, 3, b"ghi").await.unwrap();
    assert_eq!(used_up.status(), StatusCode::FORBIDDEN);
    assert!(used_up.json::<Value>().await.unwrap()["message"].is_string());
    // A renewed URL keeps the fileId, so the upload goes on where it was.
    let renewed = upload.upload_url(&emulator).await;
    assert_ne!(renewed, url);
    assert_eq!(
        upload.chunk_status(&renewed, 3, 3, b"ghi").await,
        StatusCode::CREATED
    );
    let record = upload.record(&emulator);
    assert_eq!(record.sha256, Some(sha256_hex(b"abcdefghi")));
    assert_eq!((record.urls_issued, record.restarts), (2, 0));
    emulator.shutdown().await;
}

#[tokio::test]
async fn upload_url_expires_after_url_ttl() {
    let emulator = start_emulator(EmulatorOptions {
        url_ttl: Duration::from_millis(300),
        ..EmulatorOptions::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    assert_eq!(
        upload.chunk_status(&url, 2, 1, b"abc").await,
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let expired = upload.chunk(&url, 2, 2, b"def").await.unwrap();
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);
    assert!(
        expired.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let renewed = upload.upload_url(&emulator).await;
    assert_eq!(
        upload.chunk_status(&renewed, 2, 2, b"def").await,
        StatusCode::CREATED
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn edited_upload_tokens_are_refused() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let (before, token) = url.split_once("__token__=").unwrap();
    let (expiry, signature) = token.split_once('~').unwrap();
    let later = expiry.parse::<u64>().unwrap() + 3600;
    let forged = [
        format!("{before}__token__={later}~{signature}"),
        format!("{before}__token__={expiry}~{}", "0".repeat(64)),
        before.trim_end_matches('&').to_owned(),
        url.replace("fileId=", "fileId=x"),
        url.replace(&upload.video_id, "someothervideo"),
    ];
    for url in &forged {
        assert_eq!(
            upload.chunk_status(url, 1, 1, b"abc").await,
            StatusCode::FORBIDDEN,
            "{url}"
        );
    }
    assert_eq!(upload.record(&emulator).chunks_received, 0);
    assert_eq!(
        upload.chunk_status(&url, 1, 1, b"abc").await,
        StatusCode::CREATED
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn new_file_id_on_renewal_restarts_the_content() {
    let emulator = start_emulator(EmulatorOptions {
        new_file_id_on_renew: true,
        ..EmulatorOptions::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let first = upload.upload_url(&emulator).await;
    assert_eq!(
        upload.chunk_status(&first, 2, 1, b"abc").await,
        StatusCode::ACCEPTED
    );
    let first_file_id = upload.record(&emulator).file_id;

    let second = upload.upload_url(&emulator).await;
    let record = upload.record(&emulator);
    assert_ne!(record.file_id, first_file_id);
    assert!(second.contains(&format!("fileId={}", record.file_id)));
    assert_eq!(
        (
            record.chunks_received,
            record.bytes_received,
            record.restarts
        ),
        (0, 0, 1)
    );

    // The old URL belongs to the replaced file; the new one must start at chunk 1.
    assert_eq!(
        upload.chunk_status(&first, 2, 2, b"def").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        upload.chunk_status(&second, 2, 2, b"def").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        upload.chunk_status(&second, 2, 1, b"abc").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        upload.chunk_status(&second, 2, 2, b"def").await,
        StatusCode::CREATED
    );
    assert_eq!(upload.record(&emulator).sha256, Some(sha256_hex(b"abcdef")));
    emulator.shutdown().await;
}

#[tokio::test]
async fn status_variants_of_the_documentation() {
    let emulator = start_emulator(EmulatorOptions {
        created_on_every_chunk: true,
        url_status_ok: true,
        ..EmulatorOptions::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let answer = upload.url_answer(&emulator).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let url = answer.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        upload.chunk_status(&url, 2, 1, b"abc").await,
        StatusCode::CREATED
    );
    assert_eq!(
        upload.chunk_status(&url, 2, 2, b"def").await,
        StatusCode::CREATED
    );
    assert!(upload.record(&emulator).complete);
    emulator.shutdown().await;
}

#[tokio::test]
async fn api_rate_limit_answers_429_with_retry_after() {
    let emulator = start_emulator(EmulatorOptions {
        api_requests_per_minute: Some(2),
        ..EmulatorOptions::default()
    })
    .await;
    let upload = Upload::new(&emulator).await; // one API call: create
    let url = upload.upload_url(&emulator).await; // two
    let limited = upload.url_answer(&emulator).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    // Chunk posts and keycloak logins are not API calls.
    assert_eq!(
        upload.chunk_status(&url, 1, 1, b"abc").await,
        StatusCode::CREATED
    );
    let _ = access_token(&upload.client, &emulator).await;
    assert_eq!(emulator.stats().rate_limited, 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn error_fault_answers_5xx_and_stores_nothing() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    emulator.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let mut seen = Vec::new();
    for _ in 0..12 {
        let answer = upload.chunk(&url, 1, 1, b"abc").await.unwrap();
        seen.push(answer.status().as_u16());
        assert!(answer.json::<Value>().await.unwrap()["message"].is_string());
    }
    assert!(
        seen.iter()
            .all(|status| [500, 502, 503, 504].contains(status)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|status| *status != seen[0]),
        "statuses vary: {seen:?}"
    );
    let login = keycloak_login(&upload.client, &emulator, "demo-password").await;
    assert!(login.status().is_server_error());
    assert_eq!(upload.record(&emulator).chunks_received, 0);
    assert_eq!(emulator.stats().faults_injected.errors, 13);
    emulator.shutdown().await;
}

#[tokio::test]
async fn throttle_fault_answers_429_with_retry_after() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    emulator.set_faults(Faults {
        throttle_rate: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    });
    let answer = upload.chunk(&url, 1, 1, b"abc").await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers()["retry-after"], "7");
    assert_eq!(upload.record(&emulator).chunks_received, 0);
    assert_eq!(emulator.stats().faults_injected.throttles, 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn stall_fault_makes_clients_time_out() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    emulator.set_faults(Faults {
        stall_rate: 1.0,
        stall: Duration::from_secs(30),
        ..Faults::default()
    });
    let impatient = upload
        .client
        .post(&url)
        .timeout(Duration::from_millis(200))
        .header("Mi24-Upload-Total-Chunks", "1")
        .header("Mi24-Upload-Current-Chunk", "1")
        .header("Content-Type", "application/octet-stream")
        .body("abc")
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout());
    emulator.set_faults(Faults::default());
    assert_eq!(
        upload.chunk_status(&url, 1, 1, b"abc").await,
        StatusCode::CREATED
    );
    let faults = emulator.stats().faults_injected;
    assert_eq!((faults.stalls, faults.total), (1, 1));
    // Shutdown does not wait for the stalled request.
    tokio::time::timeout(Duration::from_secs(2), emulator.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn reset_fault_drops_the_connection_mid_body() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    emulator.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let big = content(4 << 20, 1);
    let error = upload.chunk(&url, 1, 1, &big).await.unwrap_err();
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");

    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nMi24-Upload-Total-Chunks: 1\r\n\
         Mi24-Upload-Current-Chunk: 1\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 3\r\n\r\nabc",
        path_and_query(&url),
        emulator_addr(&emulator)
    );
    let answer = raw_exchange(&emulator, request.as_bytes()).await;
    assert!(answer.is_empty(), "no HTTP answer: {:?}", text(&answer));

    let record = upload.record(&emulator);
    assert_eq!((record.chunks_received, record.bytes_received), (0, 0));
    let stats = emulator.stats();
    assert_eq!(stats.faults_injected.resets, 2);
    assert!(stats.bytes_received < big.len() as u64 + 3);
    emulator.shutdown().await;
}

#[tokio::test]
async fn lost_ack_fault_stores_the_chunk_but_never_answers() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    emulator.set_faults(Faults {
        lost_ack_rate: 1.0,
        ..Faults::default()
    });
    let first = content(100_000, 1);
    let error = upload.chunk(&url, 2, 1, &first).await.unwrap_err();
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    assert_eq!(upload.record(&emulator).chunks_received, 1);

    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nMi24-Upload-Total-Chunks: 2\r\n\
         Mi24-Upload-Current-Chunk: 2\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 3\r\n\r\nabc",
        path_and_query(&url),
        emulator_addr(&emulator)
    );
    let answer = raw_exchange(&emulator, request.as_bytes()).await;
    assert!(answer.is_empty(), "no HTTP answer: {:?}", text(&answer));
    let record = upload.record(&emulator);
    assert!(record.complete);
    assert_eq!(
        record.sha256,
        Some(sha256_hex(&[first.as_slice(), b"abc"].concat()))
    );

    // The client re-sends the chunk whose answer it never got, and now hears 201.
    emulator.set_faults(Faults::default());
    assert_eq!(
        upload.chunk_status(&url, 2, 2, b"abc").await,
        StatusCode::CREATED
    );
    assert_eq!(upload.record(&emulator).restarts, 0);
    assert_eq!(emulator.stats().faults_injected.lost_acks, 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_server() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = client();
    let _ = access_token(&client, &emulator).await;
    let token_url = emulator.token_url();
    emulator.shutdown().await;
    let after = client
        .post(token_url)
        .form(&[("grant_type", "password")])
        .send()
        .await;
    assert!(after.is_err());
}

/// Chunk bodies per second through the emulator on loopback, with a raw keep-alive client so
/// the client is not what is measured. Run with
/// `cargo test --release --test integration emulator::chunk_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release"]
async fn chunk_throughput() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let chunk = content(8 << 20, 1);
    let chunks = 96u32;
    let mut stream = TcpStream::connect(emulator_addr(&emulator)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    for current in 1..=chunks {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nMi24-Upload-Total-Chunks: {chunks}\r\n\
             Mi24-Upload-Current-Chunk: {current}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            path_and_query(&url),
            emulator_addr(&emulator),
            chunk.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&chunk).await.unwrap();
        let mut read = 0;
        while !answer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            read += stream.read(&mut answer[read..]).await.unwrap();
        }
        assert!(answer.starts_with(b"HTTP/1.1 20"));
    }
    let elapsed = started.elapsed();
    let bytes = u64::from(chunks) * chunk.len() as u64;
    let rate = bytes as f64 / elapsed.as_secs_f64() / 1e9;
    println!("{bytes} bytes in {elapsed:?}: {rate:.2} GB/s");
    assert!(upload.record(&emulator).complete);
    emulator.shutdown().await;
}

#[tokio::test]
async fn platform_refusals_refuse_every_request_alike_until_switched_off() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let client = &upload.client;
    let token = &upload.token;
    let set = |refusal| {
        emulator.set_faults(Faults {
            platform_refusal: refusal,
            ..Faults::default()
        })
    };

    set(Some(PlatformRefusal::CreateForbidden));
    let answer = create_video(client, &emulator, token, json!({"fileName": "a.mp4"})).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("may not create videos")
    );
    // The bearer check comes first, as on the platform.
    let answer = create_video(client, &emulator, "bogus", json!({"fileName": "a.mp4"})).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

    set(Some(PlatformRefusal::CreateWithoutLocation));
    let answer = create_video(client, &emulator, token, json!({"fileName": "a.mp4"})).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert!(answer.headers().get("location").is_none());

    set(Some(PlatformRefusal::MaintenancePage));
    let answer = create_video(client, &emulator, token, json!({"fileName": "a.mp4"})).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("<title>Scheduled maintenance")
    );
    assert_eq!(upload.url_answer(&emulator).await.status(), StatusCode::OK);
    // A chunk answered by the maintenance page is not stored.
    assert_eq!(
        upload.chunk_status(&url, 1, 1, b"data").await,
        StatusCode::OK
    );
    // Logins (another host on the platform) still work.
    access_token(client, &emulator).await;

    assert_eq!(emulator.videos().len(), 1, "nothing was created meanwhile");
    assert_eq!(emulator.videos()[0].chunks_received, 0);

    set(None);
    let answer = create_video(client, &emulator, token, json!({"fileName": "b.mp4"})).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert_eq!(
        upload.chunk_status(&url, 1, 1, b"data").await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn an_unknown_video_manager_is_answered_404() {
    let emulator = start_emulator(EmulatorOptions {
        video_managers: vec![VM],
        ..EmulatorOptions::default()
    })
    .await;
    let client = client();
    let token = access_token(&client, &emulator).await;
    let answer = client
        .post(format!("{}999/videos", emulator.api_url()))
        .bearer_auth(&token)
        .json(&json!({"fileName": "a.mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["message"], "video manager 999 not found");
    let answer = create_video(&client, &emulator, &token, json!({"fileName": "a.mp4"})).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_sink_checks_order_and_counts_chunks_without_hashing_them() {
    let emulator = start_emulator(EmulatorOptions {
        sink: true,
        ..Default::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let data = content(300_000, 21);
    assert_eq!(
        upload.chunk_status(&url, 3, 1, &data[..100_000]).await,
        StatusCode::ACCEPTED
    );
    // Out of order and a changed total are refused as without the sink.
    let skipped = upload.chunk(&url, 3, 3, &data[200_000..]).await.unwrap();
    assert_eq!(skipped.status(), StatusCode::CONFLICT);
    assert_eq!(
        skipped.json::<Value>().await.unwrap()["message"],
        "chunk 3 out of order: expected 2"
    );
    assert_eq!(
        upload
            .chunk_status(&url, 4, 2, &data[100_000..200_000])
            .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        upload
            .chunk_status(&url, 3, 2, &data[100_000..200_000])
            .await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        upload.chunk_status(&url, 3, 3, &data[200_000..]).await,
        StatusCode::CREATED
    );
    let record = upload.record(&emulator);
    assert!(record.complete);
    assert_eq!(
        (record.chunks_received, record.bytes_received),
        (3, 300_000)
    );
    assert_eq!(record.sha256, None, "a sink does not hash");
    // Every body byte that arrived is counted, the refused ones too.
    let stats = emulator.stats();
    assert_eq!(stats.bytes_received, 300_000 + 100_000 + 100_000);
    assert_eq!(stats.chunks_accepted, 3);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_model_delays_every_answer_and_shares_one_rate() {
    let emulator = start_emulator(EmulatorOptions {
        latency: Duration::from_millis(50),
        link_rate: Some(8 << 20),
        sink: true,
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let first = Upload::new(&emulator).await;
    // Login and create: two answers, each one latency away.
    assert!(started.elapsed() >= Duration::from_millis(100));
    let second = Upload::new(&emulator).await;
    let (url_1, url_2) = (
        first.upload_url(&emulator).await,
        second.upload_url(&emulator).await,
    );
    let chunk = content(2 << 20, 22);
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        first.chunk_status(&url_1, 1, 1, &chunk),
        second.chunk_status(&url_2, 1, 1, &chunk)
    );
    let took = started.elapsed();
    assert_eq!((a, b), (StatusCode::CREATED, StatusCode::CREATED));
    // 4 MiB over one 8 MiB/s link: half a second for both together, then the answer.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn chunks_over_max_chunk_size_are_refused_with_413_before_their_body_counts() {
    let emulator = start_emulator(EmulatorOptions {
        max_chunk_size: Some(1 << 20),
        ..Default::default()
    })
    .await;
    let upload = Upload::new(&emulator).await;
    let url = upload.upload_url(&emulator).await;
    let data = content((1 << 20) + 1, 23);
    let refused = upload.chunk(&url, 1, 1, &data).await.unwrap();
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let message = refused.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("larger than the 1048576 bytes"),
        "{message}"
    );
    assert_eq!(upload.record(&emulator).chunks_received, 0);
    assert_eq!(emulator.stats().chunks_too_large, 1);
    // Exactly the limit is fine.
    assert_eq!(
        upload.chunk_status(&url, 2, 1, &data[..1 << 20]).await,
        StatusCode::ACCEPTED
    );
    emulator.shutdown().await;
}
